"""The controller contract, numpy only: what a controller is asked (observation features) and may
answer (actions, levels), the states it names, and trained controllers as numpy policies and
checkpoints. The simulator, the environments and the deploy agent all speak it."""
