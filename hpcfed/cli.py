"""The `hpcfed` command line: one verb per pipeline stage."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click


def _fail(message: str, code: int = 2) -> None:
    from hpcfed.runtime import world_rank_from_env

    # Every rank parses the config; only one of them should print the same message.
    if world_rank_from_env() in (None, 0):
        click.echo(f"hpcfed: {message}", err=True)
    sys.exit(code)


class _Commands(click.Group):
    """click's group with its usage errors in hpcfed's one-line form: 'hpcfed: <problem> (see <command> -h)',
    where click prints the usage block first and the problem last."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:  # plain `hpcfed`: the help, as click shows it
            click.echo(e.format_message())
            sys.exit(0)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx else "hpcfed"
            _fail(f"{e.format_message().rstrip('.')} (see '{where} -h')", e.exit_code)
        except click.ClickException as e:
            _fail(e.format_message(), e.exit_code)
        except click.Abort:
            _fail("aborted", 1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpcfed")
def main() -> None:
    """Personalized federated fine-tuning of CLIP-family models on MPI.

    \b
    Pipeline: a YAML config -> split -> train -> results in one HDF5 file per run.
    Launch training with one server rank plus client ranks, e.g.
      mpiexec -n 4 hpcfed train configs/demo.yaml
    """


OVERRIDE_HELP = ("Override a config key with a dotted path; the value is read as YAML. Repeatable, e.g. "
                 "-o rounds=5 -o seed=0 -o method.alpha=0.01 -o 'data.domains=[noto,twemoji]'.")


def _resolve(config: str, overrides: tuple[str, ...], check_weights: bool = True, check_data: bool = False):
    from hpcfed.config import resolve_file
    from hpcfed.errors import ConfigError

    try:
        return resolve_file(config, list(overrides), check_weights, check_data)
    except ConfigError as e:
        _fail(str(e))


def _load(config: str, overrides: tuple[str, ...], check_data: bool = False):
    return _resolve(config, overrides, check_data=check_data).config


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--override", "overrides", multiple=True, metavar="KEY=VALUE", help=OVERRIDE_HELP)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Also draw the label distribution "
              "per client into this PNG file.")
@click.option("--overwrite", is_flag=True, help="Replace the splits of an existing run file instead of refusing.")
def split(config: str, overrides: tuple[str, ...], plot_path: str | None, overwrite: bool) -> None:
    """Partition the data of CONFIG over its clients and store the splits in the run file.

    `hpcfed train` with the same config reuses these splits (checked by a hash of the data listing,
    partition settings, client count and seed) and refuses a run file whose splits do not match.
    """
    cfg = _load(config, overrides)
    if plot_path and (Path(plot_path).is_dir() or _writable_folder(Path(plot_path).parent) is None):
        _fail(f"--plot {plot_path} cannot be written (a directory, or a folder that cannot be made or written); "
              "pass a PNG path in a writable folder, e.g. --plot runs/splits.png")
    from hpcfed.errors import UserError
    from hpcfed.results import open_run
    from hpcfed.train.setup import prepare_splits, read_listing

    try:
        listing = read_listing(cfg)
        prepared = prepare_splits(cfg, listing, overwrite)
        splits, listing = prepared.splits, listing.without(prepared.unreadable)
    except UserError as e:
        _fail(str(e))
    click.echo(f"{'reused' if prepared.reused else 'wrote'} splits of {len(splits.clients)} clients ({splits.scheme}, "
               f"seed {splits.seed}, listing {splits.listing_digest}) in {cfg.output_path}")
    click.echo(f"{'client':>6}  {'domain':<14} {'train':>6} {'val':>5} {'test':>5} {'classes':>7}")
    for i, c in enumerate(splits.clients):
        domain = listing.domain_names[c.domain] if c.domain >= 0 else "mixed"
        n_classes = len(set(listing.labels[c.train].tolist()))
        click.echo(f"{i:>6}  {domain:<14} {len(c.train):>6} {len(c.val):>5} {len(c.test):>5} {n_classes:>7}")
    if splits.holdout_clients is not None:
        click.echo(f"held out of training (scored as new clients): clients {splits.holdout_clients.tolist()}")
    if splits.unseen_domain_test is not None:
        click.echo(f"held-out domain {cfg.partition.holdout_domain}: no client holds it; every client is scored "
                   f"on its {len(splits.unseen_domain_test)} images")
    if plot_path:
        from hpcfed.report.plots import plot_label_distribution

        with open_run(cfg.output_path) as f:
            counts = {part: f[f"splits/label_counts/{part}"][:] for part in ("train", "val", "test")}
        labels = [f"{i} {listing.domain_names[c.domain] if c.domain >= 0 else ''}".strip()
                  for i, c in enumerate(splits.clients)]
        title = f"{cfg.name}: {cfg.data.dataset}, {splits.scheme} over {len(splits.clients)} clients (seed {cfg.seed})"
        click.echo(f"plot: {plot_label_distribution(counts, list(listing.class_names), labels, title, plot_path)}")


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--last", is_flag=True, help="Show the last evaluated round instead of the one selected on validation.")
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "latex"]), help="Also write the table in this "
              "format to --out.")
@click.option("--out", "out_path", type=click.Path(), help="File for --format (default: report.<ext>, which "
              "is never replaced; a file named here is).")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False), help="Write PNG figures into this directory.")
@click.option("--published", "paper", metavar="PAPER", help="Also show PAPER's published Local/Base/Novel/HM "
              "beside the measured ones, with the difference and the protocol differences (e.g. pfedmma).")
def report(runs: tuple[str, ...], last: bool, fmt: str | None, out_path: str | None, plots_dir: str | None,
           paper: str | None) -> None:
    """Table of the run files RUNS (globs welcome): one row per dataset and method, seeds as mean ± std.

    Runs that are not finished, or whose split differs from the other runs of the same dataset and seed,
    are listed apart and left out of the means.
    """
    import glob

    from hpcfed.errors import ReportError
    from hpcfed.report.domains import domain_table
    from hpcfed.report.runs import read_runs
    from hpcfed.report.table import build_table, caption, format_table

    which = "last" if last else "selected"
    # Quoted patterns too (a Makefile, a shell that did not expand them); a pattern matching nothing is an error.
    paths = [match for pattern in runs
             for match in (sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]) or [pattern]]
    table_path = _report_outputs(fmt, out_path, plots_dir, paths)  # before any work: no half-written outputs
    try:
        if paper:
            from hpcfed.report.published import published_tables

            published_tables(paper)  # an unknown name fails before any run file is read
        run_infos = read_runs(paths, which)
    except ReportError as e:
        _fail(str(e))
    table, text_caption = build_table(run_infos, which), caption(run_infos, which)
    click.echo(format_table(table, text_caption))
    per_domain = domain_table(run_infos, which)  # leave-one-domain-out runs only
    if per_domain:
        click.echo("\n" + per_domain)
    if paper:
        from hpcfed.report.published import build_comparison, format_comparison

        click.echo("\n" + format_comparison(*build_comparison(run_infos, paper), paper, which))
    if table_path is not None:
        table_path.write_text(format_table(table, text_caption, fmt))
        click.echo(f"table: {table_path}")
    if plots_dir:
        from hpcfed.report.figures import write_figures

        for figure in write_figures(run_infos, plots_dir, which):
            click.echo(f"plot: {figure}")


def _writable_folder(folder: Path) -> Path | None:
    """The nearest existing folder of `folder` if this user may create files there, else None."""
    from hpcfed.env import nearest_existing

    folder = nearest_existing(folder)
    return folder if folder.is_dir() and os.access(folder, os.W_OK) else None


def _is_hdf5(path: Path) -> bool:
    from hpcfed.results import HDF5_SIGNATURE

    with open(path, "rb") as f:
        return f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE


def _report_outputs(fmt: str | None, out_path: str | None, plots_dir: str | None, runs: list[str]):
    """The table file to write (None without --format), after checking that every output can be written. The
    default report.<ext> never replaces a file that is already there; a file named by --out does."""
    table_path = None
    if out_path and not fmt:
        _fail(f"--out {out_path} without --format: pass --format md, csv or latex to write the table there")
    if fmt:
        table_path = Path(out_path or "report." + {"md": "md", "csv": "csv", "latex": "tex"}[fmt])
        if table_path.is_file() and _is_hdf5(table_path):
            which = "one of the run files being reported" if any(
                Path(r).exists() and table_path.samefile(r) for r in runs) else "an HDF5 file, e.g. a run file"
            _fail(f"--out {table_path} is {which}, so it is left as it is; name a table file, e.g. --out "
                  f"report.{fmt}")
        if out_path is None and table_path.exists():
            _fail(f"{table_path} already exists and was not named with --out, so it is left as it is; pass --out "
                  f"{table_path} to replace it, or --out <new file>")
        if table_path.is_dir():
            _fail(f"--out {table_path} is a directory; name a file, e.g. --out {table_path / ('report.' + fmt)}")
        if _writable_folder(table_path.parent) is None or (table_path.exists() and not os.access(table_path,
                                                                                               os.W_OK)):
            _fail(f"cannot write the table to {table_path}: its folder is not writable; pass --out <file in a "
                  "writable folder>")
    if plots_dir:
        if Path(plots_dir).exists() and not Path(plots_dir).is_dir():
            _fail(f"--plots {plots_dir} is a file; pass a directory for the figures, e.g. --plots runs/plots")
        if _writable_folder(Path(plots_dir)) is None:
            _fail(f"cannot write figures into {plots_dir}: it cannot be created or is not writable; pass --plots "
                  "<a writable directory>")
    return table_path


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--override", "overrides", multiple=True, metavar="KEY=VALUE", help=OVERRIDE_HELP)
@click.option("--overwrite", is_flag=True, help="Replace an existing results file instead of refusing.")
@click.option("--resume", default="never", metavar="auto|never|PATH", show_default=True,
              help="auto: continue from the newest valid checkpoint of the run (start it if there is none); "
                   "PATH: from that checkpoint directory; never: a new run.")
@click.option("--print-config", is_flag=True, help="Print every resolved value of CONFIG and where it came from "
              "(default, the method's reference recipe, the config file, an override), then exit.")
def train(config: str, overrides: tuple[str, ...], overwrite: bool, resume: str, print_config: bool) -> None:
    """Run federated training of CONFIG under MPI (rank 0 is the server, ranks 1.. host the clients).

    Every key of CONFIG can be overridden with -o KEY=VALUE. The config is checked completely before any
    MPI work; results go to the HDF5 file named by `output`.

    \b
    Checkpoints go to <output>.ckpt/ every runtime.checkpoint_every rounds and after the last round, so a
    finished run continues with more rounds by -o rounds=N --resume auto. SIGUSR1, SIGTERM or Ctrl-C stops
    the run at the next round boundary with a checkpoint and exit code 75 (requeue, then --resume auto); during
    set-up they stop it at once, with the same code. A second Ctrl-C stops at once, without a checkpoint.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: one thread per rank
    if overwrite and resume != "never":
        _fail("--overwrite starts the run again and --resume continues it: pass only one of them")
    if resume not in ("auto", "never") and not Path(resume).is_dir():
        _fail(f"--resume {resume}: not 'auto', 'never' or a checkpoint directory; pass --resume auto, or a "
              "directory such as runs/demo_seed0.ckpt/round-000004")
    if print_config:  # the config as it would run; missing weights are reported, not fatal, here
        click.echo(_resolve(config, overrides, check_weights=False).table())
        from hpcfed.config import resolve_file
        from hpcfed.errors import ConfigError

        try:
            resolve_file(config, list(overrides), check_data=True)
        except ConfigError as e:
            click.echo(f"note: `hpcfed train` would stop here: {e}")
        return
    from hpcfed.runtime import StopRequest

    stop = StopRequest()  # first: a SIGUSR1 during the imports and set-up must not kill the rank
    try:
        cfg = _load(config, overrides, check_data=True)  # every problem of config, weights and data at once
        _check_output_file(cfg, overwrite, resume != "never")
        rt = _start_mpi(cfg, single_process=False)
        from hpcfed.runtime import abort_on_error
        from hpcfed.train.loop import run
        from hpcfed.train.summary import print_client_table

        with abort_on_error(rt.world):
            run(cfg, rt, overwrite=overwrite, resume=resume, stop=stop)
            if rt.is_server:
                print_client_table(cfg.output_path)
                click.echo(f"results: {cfg.output_path}")
    finally:
        stop.restore()


def _check_output_file(cfg, overwrite: bool, resuming: bool) -> None:
    """A damaged run file, or a trained one that is neither continued nor replaced, is refused before launch."""
    from hpcfed.errors import UserError
    from hpcfed.train.setup import usable_output

    try:
        usable_output(cfg, overwrite, resuming)
    except UserError as e:
        _fail(f"error: {e}")


def _start_mpi(cfg, single_process: bool):
    """The MPI runtime, once the launch is known to work: a launcher whose MPI differs from mpi4py's makes
    MPI_Init abort with the library's own error stacks, so that is checked first, from the environment."""
    from hpcfed.checkenv import launch_problem
    from hpcfed.runtime import init_runtime

    problem = launch_problem(dict(os.environ), single_process)
    if problem is not None:
        message, launcher_rank = problem
        if launcher_rank in (None, 0):
            click.echo(f"hpcfed: launch error: {message}", err=True)
        sys.exit(2)
    return init_runtime(cfg.runtime.device, cfg.runtime.threads, cfg.runtime.poll_interval, cfg.runtime.cuda_aware_mpi)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--override", "overrides", multiple=True, metavar="KEY=VALUE", help=OVERRIDE_HELP)
@click.option("--views", type=int, metavar="K", help="K fixed augmented views per training image (sets "
              "train.augment: true and train.augment_views; train with the same values to use the cache).")
@click.option("--overwrite", is_flag=True, help="Extract again even if a cache with this key exists.")
def extract(config: str, overrides: tuple[str, ...], views: int | None, overwrite: bool) -> None:
    """Compute the frozen prefix of the image tower once for every image of CONFIG's splits (fp16, HDF5).

    The cut is where the method's parameters first touch the image tower (pFedMMA: the first adapted block;
    prompt methods: the final embedding). The file is named by a key of model, weights, data listing,
    transform, views and cut, in extract.dir; `hpcfed train` with extract.enabled: true uses it, or makes it
    when missing. Run it under MPI to split the work: mpiexec -n 4 hpcfed extract configs/demo.yaml
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    views_overrides = (f"train.augment={'true' if views else 'false'}", f"train.augment_views={views}")
    from hpcfed.runtime import StopRequest

    stop = StopRequest()  # a signal stops every rank at its next chunk, with exit 75
    try:
        cfg = _load(config, overrides + (views_overrides if views is not None else ()), check_data=True)
        rt = _start_mpi(cfg, single_process=True)
        from hpcfed.runtime import abort_on_error
        from hpcfed.train.setup import extract_only

        with abort_on_error(rt.world):
            path = extract_only(cfg, rt, overwrite)
            if rt.is_server:
                k = cfg.train.augment_views
                views_hint = f" -o train.augment=true -o train.augment_views={k}" if k else ""
                click.echo(f"cache: {path}  (train with -o extract.enabled=true{views_hint})")
    finally:
        stop.restore()


@main.command()
@click.argument("run_file", type=click.Path(dir_okay=False))
def status(run_file: str) -> None:
    """Show how far the run in RUN_FILE has come: state, round, latest metrics, ETA, newest checkpoint.

    Safe while the job is writing the file (SWMR).
    """
    from hpcfed.errors import StatusError
    from hpcfed.report.status import describe_run

    try:
        click.echo(describe_run(run_file))
    except StatusError as e:
        _fail(str(e))


@main.command("check-env")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--override", "overrides", multiple=True, metavar="KEY=VALUE", help=OVERRIDE_HELP)
def check_env(config: str | None, overrides: tuple[str, ...]) -> None:
    """Check that a job launched like this one would work, before queueing it.

    \b
    Run it under the launcher the job will use, e.g.
      mpiexec -n 4 hpcfed check-env configs/demo.yaml

    Checks the MPI library against the launcher, the rank count, hosts and devices, and with CONFIG the model
    weights, the dataset, the run file and the free disk space. Exits 1 when a check fails.
    """
    from hpcfed.checkenv import run_checks

    report, failure, code = run_checks(config, list(overrides))
    if report is not None:
        click.echo(report)
    if failure is not None:  # on stderr too, for job scripts and logs that keep only errors
        click.echo(f"hpcfed: {failure}", err=True)
    sys.exit(code)


if __name__ == "__main__":  # `python -m hpcfed.cli` as well as `python -m hpcfed` and the `hpcfed` script
    main(prog_name="hpcfed")
