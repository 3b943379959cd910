"""The worker processes of a merge: each input validated, its rejections cascaded and its rows compacted
for the merge pass in a second process (two at most: the target is a small office PC), and the error
workbooks written there while the merge goes on.  Results travel through a spool folder beside the
master, removed by the next run if this one is killed."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import pickle
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xlcrm import fileperm
from xlcrm.errors import UnreadableWorkbook, XlcrmError
from xlcrm.master.merge import MergeReport, Source, cascade_rejections, compact
from xlcrm.schema import Schema
from xlcrm.store.snapshot import die_with
from xlcrm.xlsx import crypto


def validate_job(path: Path, schema: Schema, today: dt.date, password: str | None = None) -> tuple[Any, Any]:
    """Validate one workbook and reduce it to what merge needs: (result without frames, sheets).

    Runs in a worker process for large inputs; returns ``(None, message)`` for an unreadable file.
    """
    from xlcrm.intake.validate import validate_workbook
    from xlcrm.xlsx.reader import paused_gc

    with paused_gc():  # compact's match keys would set off full collections too (reader.paused_gc)
        try:
            result = validate_workbook(path, schema, today=today, password=password)
        except UnreadableWorkbook as exc:
            return None, str(exc)
        cascade_rejections(result, schema)
        return result, compact(result, schema)


def _validate_to_file(path: Path, schema: Schema, today: dt.date, password: str | None, out: Path) -> Path:
    """:func:`validate_job` in a worker, its result pickled to ``out`` (see :meth:`Workers.map_validate`)."""
    outcome = validate_job(path, schema, today, password)
    with open(out, "wb") as fh:
        pickle.dump(outcome, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return out


def load_validated(out: Path) -> tuple[Any, Any]:
    with open(out, "rb") as fh:
        outcome = pickle.load(fh)
    out.unlink()
    return outcome  # type: ignore[no-any-return]


#: Inputs at least this large (bytes, all files together) are validated in worker processes.
PARALLEL_BYTES = 2_000_000


#: Above this many rows in a file with errors its error workbook is written by a worker process while
#: the merge runs: annotating a large workbook (openpyxl load + save) takes seconds per file.
BACKGROUND_ANNOTATE_ROWS = 5_000


def _annotate_job(result: Any, out: Path, password: str | None = None) -> str:
    return str(annotate_source(result, out, password))


def annotate_source(result: Any, out: Path, password: str | None = None) -> Path:
    """The error workbook of one input; an encrypted input gets an encrypted error workbook.

    An encrypted input is decrypted in memory and annotated from there, and its error workbook is
    sealed with the same password before anything of it reaches the disk — it holds the same
    personal data as the input.
    """
    import io

    from xlcrm.intake.validate import annotate

    fileperm.make_dirs(out.parent)  # errors/<time>/: its owner's only, like the copies in it
    src = Path(result.path)
    data = src.read_bytes()
    if not crypto.is_encrypted(data):
        return annotate(result, out)
    plain = io.BytesIO(crypto.decrypt_bytes(data, password, path=src))
    del data
    return annotate(result, out, source=plain, password=password or "")


#: How much the worker processes step back (``nice``) for the merge process: see _lower_priority.
WORKER_NICE = 10


def _worker_init(parent: int) -> None:
    """A worker dies with the merge (a killed merge leaves no worker validating on) and steps back."""
    die_with(parent)
    _lower_priority()


def _lower_priority() -> None:
    """The merge process is the run's critical path (one transaction, one process); the workers'
    validation is throughput that only has to stay ahead of it.  Three busy processes on two cores
    share them equally, so at equal priority the merge would get two thirds of a core while the
    workers run and then finish alone, with one core idle.  Lowered, the workers take what the merge
    leaves, and get both cores whenever it waits for them."""
    with contextlib.suppress(AttributeError, OSError):  # no os.nice (Windows): equal priority
        os.nice(WORKER_NICE)


def _slim(result: Any) -> Any:
    """What annotate needs (path, language, findings) without the sheets, to send to a worker."""
    from xlcrm.intake.validate import ValidationResult
    from xlcrm.xlsx.reader import TeamWorkbook

    wb = result.workbook
    return ValidationResult(TeamWorkbook(wb.path, wb.meta, {}), result.schema, {}, list(result.findings), {})


#: The spool of a dry run (which writes nothing beside the master) in the system's temp folder:
#: ``xlcrm-validated-<pid>-…``, removed by a later run once that process is gone.
_SPOOL_PREFIX = "xlcrm-validated-"


def _remove_dead_spools() -> None:
    import tempfile

    for spool in Path(tempfile.gettempdir()).glob(f"{_SPOOL_PREFIX}*-*"):
        pid = spool.name[len(_SPOOL_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        shutil.rmtree(spool, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


class Workers:
    """Worker processes (2 at most: the target is a small office PC) for validation and error workbooks.

    Validation of large inputs is spread over them; each input's error workbook (validate's annotated
    copy, an openpyxl load + save taking seconds for a large file) is written by them while the main
    process merges.  Small inputs are handled inline: a process costs more than it saves there.
    """

    def __init__(self, out_dir: Path | None, background_rows: int | None = None,
                 password: str | None = None, spool_beside: Path | None = None) -> None:
        self.out_dir = out_dir
        self.password = password
        #: validated inputs are spooled beside this file (the master), in a temp folder the next run
        #: removes if this one is killed (writer.remove_leftovers); None: the system's temp folder
        self.spool_beside = spool_beside
        _remove_dead_spools()
        self.annotate = out_dir is not None
        self.background_rows = BACKGROUND_ANNOTATE_ROWS if background_rows is None else background_rows
        self.pool: Any = None
        self.jobs: dict[int, tuple[Source, Any]] = {}
        self.spool: Path | None = None  # validated inputs on their way from the workers

    def _pool(self) -> Any:
        if self.pool is None:
            import concurrent.futures
            import multiprocessing
            import sys

            # fork on Linux: no re-import of __main__ (which may be a script or stdin); the children
            # never touch the database connection they inherit.
            fork = sys.platform.startswith("linux")
            if fork:
                # Imported once here (the merge needs them too), not again in each worker: pandas and
                # pandera take ~0.5 s of CPU per process.
                pass
            ctx = multiprocessing.get_context("fork" if fork else "spawn")
            self.pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=max(1, min(2, os.cpu_count() or 1)), mp_context=ctx, initializer=_worker_init,
                initargs=(os.getpid(),))
        return self.pool

    def parallel(self, paths: Sequence[Path]) -> bool:
        if len(paths) < 2:
            return False
        try:
            return sum(p.stat().st_size for p in paths) >= PARALLEL_BYTES
        except OSError:
            return False

    def map_validate(self, paths: Sequence[Path], schema: Schema, today: dt.date,
                     password: str | None = None) -> list[Any] | None:
        """Futures of :func:`validate_job` per path; their results come back through temp files.

        Why files: a validated 40,000-row workbook is ~7 MB pickled, and a worker sending it through
        the pool's pipe blocks until the busy merge process reads it (a fraction of a second idle per
        file on each worker).  Written to a file, the worker goes on at once; the merge loads it
        when it reaches that file.
        """
        import tempfile

        try:
            pool = self._pool()
            beside = self.spool_beside
            self.spool = Path(tempfile.mkdtemp(prefix=f".{beside.name}.", suffix=".tmp", dir=beside.parent)
                              if beside is not None else
                              tempfile.mkdtemp(prefix=f"{_SPOOL_PREFIX}{os.getpid()}-"))
            return [pool.submit(_validate_to_file, p, schema, today, password, self.spool / f"{i}.pickle")
                    for i, p in enumerate(paths)]
        except Exception:
            return None

    def out(self, src: Source) -> Path:
        assert self.out_dir is not None
        return self.out_dir / f"{src.path.stem}.errors.xlsx"

    def submit_annotate(self, src: Source) -> None:
        if src.rows < self.background_rows:
            return  # small: written inline at the end, cheaper than a process
        try:
            self.jobs[id(src)] = (src, self._pool().submit(_annotate_job, _slim(src.result), self.out(src),
                                                                self.password))
        except Exception:  # no worker processes here: the file is annotated inline at the end
            self.jobs.pop(id(src), None)

    def finish(self, sources: Sequence[Source], report: MergeReport) -> None:
        """Wait for the error workbooks (writing the small ones and re-writing late ones here)."""
        try:
            for s in sources:
                fr = s.report
                if fr is None or fr.total("rejected") == 0:
                    continue
                if fr.status == "ok":
                    fr.status = "errors"
                if not self.annotate:
                    continue
                job = self.jobs.get(id(s))
                try:
                    done = False
                    if job is not None:
                        try:
                            job[1].result()  # wait; a late finding means writing it again below
                            done = True
                        except (XlcrmError, OSError):
                            raise
                        except Exception:  # a broken worker: write it here instead
                            done = False
                    if not done or s.late_findings:
                        annotate_source(s.result, self.out(s), self.password)
                except (XlcrmError, OSError) as exc:
                    report.warnings.append(f"{s.path}: could not write the error workbook ({exc})")
                    continue
                fr.error_workbook = str(self.out(s))
        finally:
            self.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        if self.spool is not None:
            shutil.rmtree(self.spool, ignore_errors=True)
            self.spool = None
