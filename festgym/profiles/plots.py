"""Profile curves as PNG: latency, power and energy per token against SM clock and SM share,
per phase."""

from __future__ import annotations

from pathlib import Path

from festgym.plots import figure
from festgym.profiles.profile import Profile

PREFILL_TOKENS = 2048
DECODE_BATCH, DECODE_CTX = 64, 1024
SHARES = (0.25, 0.5, 0.75, 1.0)


def plot_profile(profile: Profile, out_dir: str | Path) -> Path:
    """Write a 2×3 panel figure for ``profile`` into ``out_dir`` and return its path."""
    clocks = profile.control_clocks_mhz()
    fig, ax = figure(15, 8.5, 2, 3)
    for share in SHARES:
        pre = profile.prefill(PREFILL_TOKENS, share, clocks)
        dec = profile.decode(DECODE_BATCH, DECODE_CTX, share, clocks)
        label = f"share {share:g}"
        ax[0, 0].plot(clocks, pre["time_s"] * 1e3, label=label)
        ax[0, 1].plot(clocks, pre["power_w"], label=label)
        ax[1, 0].plot(clocks, dec["time_s"] * 1e3, label=label)
        ax[1, 1].plot(clocks, dec["power_w"], label=label)
        ax[0, 2].plot(clocks, pre["power_w"] * pre["time_s"] / PREFILL_TOKENS, label=label)
        ax[1, 2].plot(clocks, dec["power_w"] * dec["time_s"] / DECODE_BATCH, label=label)
    titles = [[f"prefill {PREFILL_TOKENS} tokens: time (ms)", "prefill: GPU power (W)", "prefill: J per token"],
              [f"decode batch {DECODE_BATCH}, ctx {DECODE_CTX}: step time (ms)", "decode: GPU power (W)",
               "decode: J per output token"]]
    for i in range(2):
        for j in range(3):
            ax[i, j].set_title(titles[i][j])
            ax[i, j].set_xlabel("SM clock (MHz)")
            ax[i, j].grid(alpha=0.3)
        ax[i, 1].axhline(profile.gpu.tdp_w, color="k", ls="--", lw=0.8, label="TDP")
        ax[i, 1].axhline(profile.gpu.states.resident_w, color="grey", ls=":", lw=0.8, label="resident idle")
    ax[0, 0].legend()
    ax[0, 1].legend()
    fig.suptitle(f"{profile.key} (modelled; see profile.yaml provenance)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{profile.gpu.name}_{profile.model.name}.png"
    fig.savefig(path, dpi=90)
    return path
