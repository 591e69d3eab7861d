"""``deblur weights list|info|download|register|publish``: the weights registry from the command line.

Each body only calls :mod:`deblur_cli.hub.registry`, :mod:`deblur_cli.hub.download` and
:mod:`deblur_cli.hub.loading`, imported inside it (no torch or huggingface_hub at import time).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from deblur_cli.cli.app import app
from deblur_cli.errors import DeblurError

weights_app = typer.Typer(
    name="weights",
    help="List, inspect, download, register and publish model weights.",
    no_args_is_help=True,
)
app.add_typer(weights_app, name="weights")

# Shared parameter aliases.
NameArg = Annotated[
    str, typer.Argument(help="Registry entry `arch.tag` (see `deblur weights list`).", show_default=False)
]
TokenOpt = Annotated[
    Optional[str],  # noqa: UP045 - typer evaluates annotations at runtime
    typer.Option(
        "--token", help="Hugging Face token (default: HF_TOKEN or the stored `hf auth login`).", show_default=False
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
RegistryOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        "--registry", help="registry.json to read/write (default: the installed package's).", show_default=False
    ),
]


def _human(size: int | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return str(size)


def _metrics(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in metrics.items()) or "-"


@weights_app.command("list")
def list_(json_out: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Show the registry: every entry with its status (bundled, cached, remote or unavailable)."""
    from rich.console import Console
    from rich.table import Table

    from deblur_cli.hub.download import entry_status
    from deblur_cli.hub.registry import load_registry

    reg = load_registry(registry)
    rows = [(e, entry_status(reg, e)) for e in reg.entries.values()]
    if json_out:
        out = [{**e.to_dict(), "status": s, "default": e.name == reg.default} for e, s in rows]
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table(title="deblur weights", title_justify="left")
    for col in ("name", "arch", "status", "size", "license", "description"):
        table.add_column(col, overflow="fold")
    for e, status in rows:
        name = f"{e.name} (default)" if e.name == reg.default else e.name
        table.add_row(name, e.arch, status, _human(e.size), e.license or "-", e.description)
    Console(width=max(100, Console().width)).print(table)


@weights_app.command("info")
def info(
    name: Annotated[str, typer.Argument(help="Registry entry `arch.tag`, or a local .safetensors file.")],
    json_out: JsonOpt = False,
    registry: RegistryOpt = None,
) -> None:
    """Show one entry (location, revision, sha256, licence, data, metrics) or a weights file's metadata."""
    from deblur_cli.hub.registry import load_registry, read_safetensors_metadata, sha256_file
    from deblur_cli.hub.shards import index_metadata, index_path, is_sharded, set_size

    path = Path(name)
    if is_sharded(path):  # a sharded set: the index's metadata, digest and the set's size
        path = index_path(path)
        meta = index_metadata(path)
        data: dict[str, Any] = {"file": str(path), "sha256": sha256_file(path), "size": set_size(path), "metadata": meta}
    elif not (path.suffix == ".safetensors" and path.is_file()):
        from deblur_cli.hub.download import HfRef, cached_file, entry_status

        reg = load_registry(registry)
        entry = reg.get(name)
        status = entry_status(reg, entry)
        local = reg.bundled_path(entry)
        if local is None and status == "cached":
            local = Path(cached_file(HfRef(entry.repo_id or "", entry.filename, entry.revision)) or "")
        data = {**entry.to_dict(), "status": status, "default": entry.name == reg.default}
        data["hf_uri"] = entry.hf_uri
        data["local_path"] = str(local) if local else None
        if local:
            digest = sha256_file(local)
            data["local_sha256_ok"] = digest == entry.sha256
    else:
        meta = read_safetensors_metadata(path)
        data = {"file": str(path), "sha256": sha256_file(path), "size": path.stat().st_size, "metadata": meta}
    if json_out:
        typer.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        if key == "metadata":
            for k, v in value.items():
                typer.echo(f"{'meta.' + k:>16}: {v}")
            continue
        if isinstance(value, dict):
            value = _metrics(value)
        typer.echo(f"{key:>16}: {'-' if value is None else value}")


@weights_app.command("download")
def download(
    names: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Argument(help="Registry entries, or hf://REPO/FILE[@REV] references.", show_default=False),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every published entry.")] = False,
    token: TokenOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if cached.")] = False,
    registry: RegistryOpt = None,
) -> None:
    """Fetch weights from the Hugging Face Hub into its cache and check their sha256.

    Honours HF_HOME / HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE.
    """
    from deblur_cli.hub import download as hub
    from deblur_cli.hub.registry import load_registry

    reg = load_registry(registry)
    targets = list(names or [])
    if all_:
        targets += [e.name for e in reg.entries.values() if e.published and e.name not in targets]
    if not targets:
        raise DeblurError("name the weights to download (see `deblur weights list`), or pass --all")
    for target in targets:
        if hub.is_hf_uri(target):
            fetched = hub.download(hub.parse_hf_uri(target), token=token, force=force)
        else:
            entry = reg.get(target)
            if reg.bundled_path(entry) is not None and not entry.published:
                typer.echo(f"{entry.name}: ships with the package ({reg.bundled_path(entry)}), nothing to download")
                continue
            fetched = hub.fetch_entry(entry, token=token, force=force)
        what = "already cached" if fetched.source == "cache" else "downloaded"
        typer.echo(f"{target}: {what}, sha256 {fetched.sha256} verified")
        typer.echo(f"  {fetched.path}")


@weights_app.command("register")
def register(
    file: Annotated[
        Path,
        typer.Argument(
            help="A .safetensors file written by deblur_cli.hub.loading.save_weights, or a sharded set "
            "(model.safetensors.index.json or its folder)."
        ),
    ],
    name: Annotated[str, typer.Option("--name", help="Entry `arch.tag` to create or update.")],
    bundle: Annotated[
        Optional[bool],  # noqa: UP045
        typer.Option("--bundle/--no-bundle", help="Ship the file in weights/ (default: keep the entry's setting)."),
    ] = None,
    metrics: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--metrics", help="Reported metrics as JSON, e.g. '{\"psnr_synth\": 29.1}'."),
    ] = None,
    training_data: Annotated[Optional[str], typer.Option("--training-data")] = None,  # noqa: UP045
    description: Annotated[Optional[str], typer.Option("--description")] = None,  # noqa: UP045
    license_: Annotated[Optional[str], typer.Option("--license")] = None,  # noqa: UP045
    repo: Annotated[Optional[str], typer.Option("--repo", help="Hub repository owner/name.")] = None,  # noqa: UP045
    revision: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--revision", help="40-hex Hub commit holding the file (marks the entry published)."),
    ] = None,
    registry: RegistryOpt = None,
) -> None:
    """Record a weights file in the registry: sha256 and size recomputed, bundled copy refreshed.

    Use it after training (replace the bundled default) and after `deblur weights publish`.
    """
    from deblur_cli.hub.registry import load_registry, update_entry
    from deblur_cli.hub.shards import is_sharded

    changes: dict[str, Any] = {}
    if bundle is not None:  # a sharded set is bundled as a folder named after the entry
        changes["bundled"] = (name if is_sharded(file) else f"{name}.safetensors") if bundle else None
    if metrics is not None:
        try:
            changes["metrics"] = json.loads(metrics)
        except ValueError as exc:
            raise DeblurError(f"--metrics is not valid JSON: {exc}") from None
        if not isinstance(changes["metrics"], dict):
            raise DeblurError("--metrics must be a JSON object")
    for key, value in (
        ("training_data", training_data),
        ("description", description),
        ("license", license_),
        ("repo_id", repo),
        ("revision", revision),
    ):
        if value is not None:
            changes[key] = value
    if revision is not None:
        changes["published"] = True
    entry = update_entry(name, file, path=registry, **changes)
    where = load_registry(registry).path
    typer.echo(f"{entry.name}: sha256 {entry.sha256}, {entry.size} bytes recorded in {where}")
    if entry.bundled:
        typer.echo(f"  bundled as weights/{entry.bundled}")


@weights_app.command("publish")
def publish(
    name: NameArg,
    repo: Annotated[str, typer.Option("--repo", help="Hub model repository owner/name (created if missing).")],
    file: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--file",
            help="Weights to upload: a file, or a sharded set's index or folder (default: the entry's bundled weights).",
            show_default=False,
        ),
    ] = None,
    revision: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--revision", help="Branch to commit to (default: main).", show_default=False),
    ] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repository as private.")] = False,
    token: TokenOpt = None,
    message: Annotated[Optional[str], typer.Option("--message", help="Commit message.")] = None,  # noqa: UP045
    card: Annotated[
        bool, typer.Option("--card/--no-card", help="Also upload weights/MODEL_CARD.md as README.md.")
    ] = False,
    record: Annotated[
        bool, typer.Option("--record/--no-record", help="Write repo, commit and sha256 into the registry.")
    ] = False,
    registry: RegistryOpt = None,
) -> None:
    """Upload an entry's weights to the Hugging Face Hub and print the commit hash to pin.

    Needs a token with write access (--token, HF_TOKEN or `hf auth login`).
    """
    from deblur_cli.hub import download as hub
    from deblur_cli.hub.registry import hub_filename, load_registry, update_entry, weights_dir
    from deblur_cli.hub.shards import is_sharded

    reg = load_registry(registry)
    entry = reg.get(name)
    src = file if file is not None else reg.bundled_path(entry)
    if src is None:
        raise DeblurError(f"{name} has no bundled file: pass the weights to upload with --file PATH")
    sharded = is_sharded(src)
    if not (sharded or Path(src).is_file()):
        raise DeblurError(f"weights file not found: {src}")
    filename = hub_filename(entry.filename, name, sharded)  # a set goes up as its index, beside its shards
    card_path = None
    if card:
        folder = reg.path.parent if reg.path is not None else weights_dir()
        card_path = folder / "MODEL_CARD.md"
        if not card_path.is_file():
            raise DeblurError(f"model card not found: {card_path}")
    result = hub.publish(
        src,
        repo,
        filename=filename,
        arch=entry.arch,
        revision=revision,
        private=private,
        token=token,
        commit_message=message,
        card=card_path,
    )
    typer.echo(f"uploaded {src} to {repo}/{filename} (sha256 {result.sha256})")
    typer.echo(f"commit: {result.commit}")
    if record:
        update_entry(name, src, path=registry, repo_id=repo, revision=result.commit, published=True)
        typer.echo(f"recorded in {reg.path}: {name} -> hf://{repo}/{filename}@{result.commit}")
    else:
        typer.echo(f"pin it: deblur weights register {src} --name {name} --repo {repo} --revision {result.commit}")
