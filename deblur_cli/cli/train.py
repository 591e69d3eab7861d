"""``deblur train``: train a variant on GoPro-layout pairs or on sharp photos with synthetic blur."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from deblur_cli.cli.app import app

_DEFAULTS = "Paper settings (Sec. 4.1)"
_DEVICE = "Device and data pipeline"


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    config: Annotated[
        Optional[Path],
        typer.Option(
            "--config", "-c", help="Training recipe (configs/train/*.toml); options given here override its values."
        ),
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option("--out", help="Run folder: checkpoint, state.json, final weights.", show_default=False),
    ] = None,
    data: Annotated[
        Optional[Path],
        typer.Option("--data", help="GoPro layout: <scene>/blur + <scene>/sharp, optionally under train/."),
    ] = None,
    synthetic: Annotated[
        Optional[Path],
        typer.Option("--synthetic", help="Folder of sharp photos: blurred/sharp pairs are made on the fly."),
    ] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Architecture (registered variant).")] = "saphn",
    val: Annotated[Optional[Path], typer.Option("--val", help="Validation pairs (blur/ + sharp/).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    init_weights: Annotated[Optional[Path], typer.Option("--init-weights", help="Start from these weights.")] = None,
    steps: Annotated[
        Optional[int],
        typer.Option("--steps", min=1, help="Total iterations [default: 600000].", rich_help_panel=_DEFAULTS),
    ] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, rich_help_panel=_DEFAULTS)] = 6,
    crop: Annotated[int, typer.Option("--crop", min=16, help="Square crop side.", rich_help_panel=_DEFAULTS)] = 256,
    lr: Annotated[float, typer.Option("--lr", rich_help_panel=_DEFAULTS)] = 1e-4,
    schedule: Annotated[
        str, typer.Option("--schedule", help="step (halve every --lr-step) or cosine.", rich_help_panel=_DEFAULTS)
    ] = "step",
    lr_step: Annotated[int, typer.Option("--lr-step", rich_help_panel=_DEFAULTS)] = 200_000,
    warmup: Annotated[int, typer.Option("--warmup", rich_help_panel=_DEFAULTS)] = 0,
    loss: Annotated[
        str,
        typer.Option(
            "--loss", help="mse, l1+fft or psnr (each image's -PSNR in dB, averaged).", rich_help_panel=_DEFAULTS
        ),
    ] = "mse",
    level_weights: Annotated[
        str,
        typer.Option(
            "--level-weights", help="Loss weights of the level-3, -2, -1 estimates.", rich_help_panel=_DEFAULTS
        ),
    ] = "0,0,1",
    grad_clip: Annotated[float, typer.Option("--grad-clip", help="0 = off.")] = 0.0,
    val_every: Annotated[int, typer.Option("--val-every", min=1)] = 500,
    keep_val_weights: Annotated[
        bool, typer.Option("--keep-val-weights", help="Export weights at every validation, to OUT/snapshots/.")
    ] = False,
    checkpoint_minutes: Annotated[float, typer.Option("--checkpoint-minutes")] = 10.0,
    max_minutes: Annotated[
        Optional[float], typer.Option("--max-minutes", help="Stop (resumably) after this long.")
    ] = None,
    device: Annotated[str, typer.Option("--device", "-d")] = "auto",
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads; 0 = torch's default.")] = 0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    amp: Annotated[
        str,
        typer.Option("--amp", help="auto (bf16 autocast on CUDA), bf16 or off.", rich_help_panel=_DEVICE),
    ] = "auto",
    compile_model: Annotated[
        str,
        typer.Option("--compile", help="torch.compile the model: auto (off), on or off; falls back to eager if it fails.",
                     rich_help_panel=_DEVICE),
    ] = "auto",
    channels_last: Annotated[
        str, typer.Option("--channels-last", help="auto (CPU only), on or off.", rich_help_panel=_DEVICE)
    ] = "auto",
    synthesis: Annotated[
        str,
        typer.Option("--synthesis", help="Where blur is synthesised: auto (torch on CUDA), torch (batched, on the "
                     "device) or numpy (CPU reference).", rich_help_panel=_DEVICE),
    ] = "auto",
    workers: Annotated[
        int,
        typer.Option("--workers", min=0, help="CPU threads that prepare numpy batches ahead of the step (0: in line).",
                     rich_help_panel=_DEVICE),
    ] = 0,
) -> None:
    """Train SAPHN. Defaults are the paper's: Adam 1e-4 halved every 2e5 iterations, batch 6, 256x256 crops."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from deblur_cli.backends.device import resolve_device
    from deblur_cli.errors import DeblurError
    from deblur_cli.training.accel import Accel
    from deblur_cli.training.config import Recipe, check, check_config, load_recipe, run_recipe
    from deblur_cli.training.trainer import LOSSES, TrainConfig

    try:
        accel = Accel(amp=amp, compile=compile_model, channels_last=channels_last, synthesis=synthesis, workers=workers)
    except ValueError as exc:
        raise DeblurError("--" + str(exc).replace("channels_last", "channels-last")) from None
    options = {"model": model, "crop": crop, "batch": batch, "steps": steps or 600_000, "lr": lr,
               "schedule": schedule, "lr_step": lr_step, "warmup": warmup, "loss": loss, "level_weights": level_weights,
               "grad_clip": grad_clip, "val_every": val_every, "keep_val_weights": keep_val_weights,
               "checkpoint_minutes": checkpoint_minutes, "seed": seed, "threads": threads}  # fmt: skip
    paths = {"out": out, "data": data, "synthetic": synthetic, "val": val, "init_weights": init_weights}
    # With --config, only the options typed on the command line override the recipe's values.
    given = {name for name in (*options, *paths) if config is None or ctx.get_parameter_source(name).name != "DEFAULT"}
    if "level_weights" in given:
        try:
            options["level_weights"] = tuple(float(x) for x in level_weights.split(","))
            assert len(options["level_weights"]) == 3
        except (ValueError, AssertionError):
            raise DeblurError(f"--level-weights takes three numbers, e.g. 0.25,0.5,1; got {level_weights!r}") from None
    if config is None:
        if out is None:
            raise typer.BadParameter("required (or give --config with an out)", param_hint="'--out'")
        if (data is None) == (synthetic is None):
            raise DeblurError("give exactly one of --data (real pairs) or --synthetic (sharp photos)")
        if schedule not in ("step", "cosine") or loss not in LOSSES:
            raise DeblurError(f"--schedule is step or cosine; --loss is one of {', '.join(LOSSES)}")
        recipe = Recipe(config=TrainConfig())
    else:
        recipe = load_recipe(config)
    run_over = {k: (str(v) if k == "init_weights" and v is not None else v) for k, v in paths.items() if k in given}
    recipe = recipe.override(run=run_over, train={k: v for k, v in options.items() if k in given})
    check_config(recipe.config)
    check(recipe)
    out = recipe.out
    for p in (recipe.data, recipe.synthetic, recipe.val):
        if p is not None and not p.is_dir():
            raise DeblurError(f"{p}: not a folder")
    if not resume and (out / "state.json").exists():
        raise DeblurError(f"{out} already holds a run: use --resume to continue it, or another --out")
    cfg = recipe.config
    dev = resolve_device(device)
    console = Console(stderr=True)
    console.print(f"deblur: training {cfg.model} on {dev}; run folder {out}")
    columns = (TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=False) as progress:
        total = recipe.stop_at or (recipe.reschedule[-1].steps if recipe.reschedule else cfg.steps)
        task = progress.add_task("train", total=total, info="")
        last_val = [""]

        def log(line: str) -> None:
            if line.startswith("validation"):
                last_val[0] = line.split(": ", 1)[1]
            progress.console.print(line)

        def on_step(step: int, loss_value: float, lr_value: float) -> None:
            progress.update(task, completed=step, info=f"loss {loss_value:.4f} lr {lr_value:.1e} {last_val[0]}")

        try:
            st = run_recipe(recipe, resume=resume, max_minutes=max_minutes, steps=steps if resume else None,
                            device=str(dev), log=log, on_step=on_step, accel=accel)  # fmt: skip
        except (FileNotFoundError, ValueError) as exc:
            raise DeblurError(str(exc)) from None
    console.print(f"done at step {st.step}; weights: {out / 'final.safetensors'} (entry: {out / 'final.entry.json'})")
