"""A GPU host emulated by the simulator: the deploy agent's device, engines and host interfaces
backed by a simulated GPU, so that the agent runs end to end without hardware."""
