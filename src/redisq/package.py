"""``redisq package MODULE --target lambda|gcf|vercel --out DIR``: a deployable bundle.

A bundle holds the workers module (a ``.py`` file or a package directory), the worker SDK
of redisq itself (standard library only: ``redisq/__init__.py``, ``worker.py``,
``security.py``, ``keys.py``), the module's dependencies and the entry point the target
expects:

    target   entry point                       dependencies
    lambda   handler.py: handler(event, ctx)   installed into the bundle by pip for Lambda's
                                               Python (--platform manylinux2014_x86_64
                                               --python-version 3.11 --only-binary=:all:)
    gcf      main.py: main(request)            requirements.txt; Cloud Functions installs it
    vercel   api/index.py: app (ASGI),         requirements.txt; Vercel installs it
             vercel.json (every path -> it)

``MODULE[:ATTR]`` names the module by path or dotted name, and the ``Workers`` object in
it (default ``workers``; the module, or a package's ``__init__.py``, must define or import
it, which is checked by reading the source, without importing it). A ``.py`` file that is
part of a package (its directory has an ``__init__.py``) is refused: package the package
directory. The module must not be named like the target's entry point (``handler`` for
lambda, ``main`` for gcf, ``api`` or ``index`` for vercel). Dependencies come from
``--requirements FILE`` (default: a ``requirements.txt`` beside the module, i.e. in the
directory holding the file or the package directory, when there is one; one inside the
package directory is refused as ambiguous).

The bundle is built in a temporary directory beside ``--out`` and renamed to it at the
end, so a failed build leaves nothing behind. A lambda bundle, dependencies installed, is
then imported (``import handler``) by this Python in isolated mode with only the bundle and
the standard library on its path (``-I -S -B``); an error there fails the build. The check
is skipped, with a warning, when the bundle holds compiled dependencies and this Python is
not Lambda's (CPython 3.11 on Linux x86_64), which could not load them.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TARGETS = ("lambda", "gcf", "vercel")
SDK_FILES = ("__init__.py", "worker.py", "security.py", "keys.py")
LAMBDA_PIP_ARGS = ("--platform", "manylinux2014_x86_64", "--implementation", "cp", "--python-version", "3.11",
                   "--only-binary=:all:")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".venv", ".git")
# The top-level names each target's entry point takes in the bundle (see entry_point): a
# workers module of the same name would be overwritten by it, or shadow it.
ENTRY_MODULES = {"lambda": ("handler",), "gcf": ("main",), "vercel": ("api", "index")}
IMPORT_CHECK_TIMEOUT_S = 60.0
# Set for the import check when neither is in the environment, so that ``Workers()``, which
# reads them at import, can be built (the function's environment has the real one).
CHECK_SECRET = "redisq-package-import-check"
# What Lambda's Python runtime provides without the bundle holding it.
LAMBDA_RUNTIME_MODULES = ("boto3", "botocore")

log = logging.getLogger("redisq.package")


class PackageError(Exception):
    """The bundle cannot be built; the message says why."""


@dataclass(frozen=True)
class Source:
    path: Path  # the module's .py file or its package directory
    name: str  # the import name at the bundle's top level
    attr: str  # the Workers object in it


def find_module(spec: str) -> Source:
    """``path/to/workers.py``, ``path/to/pkg``, or a dotted module name importable from here;
    ``:ATTR`` picks the Workers object (default ``workers``)."""
    target, _, attr = spec.partition(":")
    attr = attr or "workers"
    if not attr.isidentifier():
        raise PackageError(f"{spec}: {attr!r} is not a Python name")
    path = Path(target)
    if target.endswith(".py") or path.exists():
        if path.is_dir():
            if not (path / "__init__.py").is_file():
                raise PackageError(f"{target}: a package directory needs an __init__.py")
            return _checked(Source(path.resolve(), path.resolve().name, attr), target)
        if not path.is_file():
            raise PackageError(f"{target}: no such file")
        return _checked(Source(path.resolve(), path.stem, attr), target)
    top = target.split(".")[0]
    if "." in target:
        raise PackageError(f"{target}: give the top-level module or package ({top}), or a path to the file")
    try:
        found = importlib.util.find_spec(target)
    except (ImportError, ValueError) as e:
        raise PackageError(f"{target}: cannot find the module: {e}") from None
    if found is None or found.origin is None:
        raise PackageError(f"{target}: no such module (give a path to the .py file instead)")
    origin = Path(found.origin)
    if origin.name == "__init__.py":
        return _checked(Source(origin.parent, top, attr), target)
    if origin.suffix != ".py":
        raise PackageError(f"{target}: {origin} is not a Python source file (give a path to the .py file instead)")
    return _checked(Source(origin, top, attr), target)


def _checked(source: Source, spec: str) -> Source:
    """Refuse a file that is part of a package, and a module without the Workers object."""
    if source.path.is_file() and (source.path.parent / "__init__.py").is_file():
        package = source.path.parent
        raise PackageError(
            f"{spec}: {source.path.name} is part of the package {package.name} ({package} has an __init__.py), "
            f"which a bundle of the file alone would break (its imports of the package): package the package "
            f"directory instead ({package}, importing the Workers object in its __init__.py)")
    code = source.path / "__init__.py" if source.path.is_dir() else source.path
    try:
        tree = ast.parse(code.read_bytes(), filename=str(code))
    except SyntaxError as e:
        raise PackageError(f"{code}: cannot be parsed: {e.msg} (line {e.lineno})") from None
    except (OSError, ValueError) as e:
        raise PackageError(f"{code}: cannot be read: {e}") from None
    if not _binds(tree, source.attr):
        hint = ""
        if source.path.is_dir() and ((source.path / f"{source.attr}.py").is_file()
                                     or (source.path / source.attr / "__init__.py").is_file()):
            hint = (f" ({source.name}.{source.attr} is a submodule, not the Workers object: import the object in "
                    f"__init__.py, e.g. `from .{source.attr} import {source.attr}`)")
        raise PackageError(f"{code}: defines or imports no {source.attr!r} (the Workers object the entry point "
                           f"imports; name another with MODULE:ATTR){hint}")
    return source


def _binds(tree: ast.Module, name: str) -> bool:
    """Whether the module may bind ``name`` at its top level: an assignment (any target, a
    ``for``, ``with ... as``, ``:=``), a def or class, an import, ``from x import *``, a
    ``global`` statement, or a module ``__getattr__``; under if/try/with/... too. Generous:
    what it cannot rule out counts as bound."""
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name in (name, "__getattr__"):
                return True
            pending.extend(n for n in ast.walk(node) if isinstance(n, ast.Global))  # not the body's locals
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bound = alias.asname or (alias.name.split(".")[0] if isinstance(node, ast.Import) else alias.name)
                if bound in (name, "*"):
                    return True
            continue
        if (
            (isinstance(node, ast.Global) and name in node.names)
            or (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id == name)
            # except ... as, match capture
            or (isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar, ast.MatchMapping))
                and name in (getattr(node, "name", None), getattr(node, "rest", None)))
        ):
            return True
        pending.extend(ast.iter_child_nodes(node))
    return False


def _entry_imports(source: Source) -> str:
    return f"from {source.name} import {source.attr} as workers\n"


def entry_point(target: str, source: Source) -> dict[str, str]:
    """The entry point files of ``target``: relative path -> text."""
    generated = "# Generated by `redisq package`; the coordinator posts each job here (see redisq.worker).\n"
    if target == "lambda":
        return {"handler.py": generated + _entry_imports(source) + "\n\ndef handler(event, context):\n"
                "    return workers.lambda_handler(event, context)\n"}
    if target == "gcf":
        return {"main.py": generated + _entry_imports(source) + "\n\ndef main(request):\n"
                "    return workers.gcf_handler(request)\n"}
    if target == "vercel":
        index = (generated + "import os\nimport sys\n\n"
                 "sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))\n\n"
                 + _entry_imports(source) + "\napp = workers  # an ASGI app\n")
        vercel_json = json.dumps({"rewrites": [{"source": "/(.*)", "destination": "/api/index"}]}, indent=2) + "\n"
        return {"api/index.py": index, "vercel.json": vercel_json}
    raise PackageError(f"unknown target {target!r} (expected one of {', '.join(TARGETS)})")


def _requirements(source: Source, requirements: str | None) -> Path | None:
    if requirements is not None:
        path = Path(requirements)
        if not path.is_file():
            raise PackageError(f"{requirements}: no such requirements file")
        return path
    beside = source.path.parent / "requirements.txt"  # beside the file, or beside the package directory
    if beside.is_file():
        return beside
    inside = source.path / "requirements.txt"
    if source.path.is_dir() and inside.is_file():
        raise PackageError(f"{inside}: the requirements file is looked for beside the package, not in it: move it "
                           f"to {beside}, or name it with --requirements {inside}")
    return None


def install_for_lambda(requirements: Path, out: Path, pip_args: Sequence[str] = ()) -> None:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(out),
               *LAMBDA_PIP_ARGS, "-r", str(requirements), *pip_args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise PackageError(f"pip could not install {requirements} for Lambda (Python 3.11, manylinux2014_x86_64):\n"
                           + (result.stderr.strip() or result.stdout.strip()))


def build(module: str, target: str, out: str | Path, *, requirements: str | None = None,
          pip_args: Sequence[str] = (), check_import: bool | None = None) -> list[str]:
    """Build the bundle into ``out`` (created; it must be an empty directory if it exists).
    Returns the bundle's top-level entries, sorted. ``check_import`` (lambda only): import
    the entry point in a clean interpreter; None = unless the bundle holds compiled
    dependencies this machine cannot load (it is not Lambda's Linux x86_64 CPython 3.11)."""
    if target not in TARGETS:
        raise PackageError(f"unknown target {target!r} (expected one of {', '.join(TARGETS)})")
    source = find_module(module)
    if source.name == "redisq":
        raise PackageError("the workers module must not be called redisq")
    if source.name in ENTRY_MODULES[target]:
        files = ", ".join(sorted(entry_point(target, source)))
        raise PackageError(
            f"{source.path}: a workers module named {source.name!r} would collide with the {target} entry point "
            f"({files}), which imports the workers module and would import itself: rename the module")
    out_dir = Path(out)
    if out_dir.exists() or out_dir.is_symlink():
        if not out_dir.is_dir():
            raise PackageError(f"{out_dir}: exists and is not a directory")
        if any(out_dir.iterdir()):
            raise PackageError(f"{out_dir}: exists and is not empty")
    reqs = _requirements(source, requirements)
    parent = out_dir.absolute().parent
    created = [d for d in (parent, *parent.parents) if not d.exists()]  # deepest first: removed on failure
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PackageError(f"{out_dir}: cannot create its directory {parent}: {e.strerror or e}") from None
    if not parent.is_dir():
        raise PackageError(f"{out_dir}: {parent} is not a directory")
    work = parent / f".{out_dir.name}.redisq-partial-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        work.mkdir()  # with the umask's permissions (mkdtemp's 0700 would reach the zip)
    except OSError as e:
        raise PackageError(f"{out_dir}: cannot write in {parent}: {e.strerror or e}") from None
    try:
        _fill(work, source, target, reqs, pip_args)
        if target == "lambda":
            check = check_import if check_import is not None else _can_import_here(work)
            if check:
                check_entry_point(work, "handler")
            else:
                log.warning("redisq package: the bundle holds compiled dependencies for Lambda (Linux x86_64, "
                            "CPython 3.11) that this Python (%s %s, %s) cannot load: its entry point was not "
                            "imported to check it", platform.python_implementation(), platform.python_version(),
                            f"{sys.platform} {platform.machine()}")
        entries = sorted(p.name for p in work.iterdir())
        if out_dir.is_dir():
            out_dir.rmdir()  # empty (checked above); fails if something was written there meanwhile
        os.rename(work, out_dir)
    except BaseException as e:
        shutil.rmtree(work, ignore_errors=True)
        for directory in created:
            try:
                directory.rmdir()  # only if still empty
            except OSError:
                break
        if isinstance(e, OSError):
            raise PackageError(f"{out_dir}: the bundle could not be written: {e}") from None
        raise
    return entries


def _fill(out_dir: Path, source: Source, target: str, reqs: Path | None, pip_args: Sequence[str]) -> None:
    if source.path.is_dir():
        shutil.copytree(source.path, out_dir / source.name, ignore=IGNORED)
    else:
        shutil.copy2(source.path, out_dir / f"{source.name}.py")
    sdk_dir = out_dir / "redisq"
    sdk_dir.mkdir()
    here = Path(__file__).resolve().parent
    for name in SDK_FILES:
        shutil.copy2(here / name, sdk_dir / name)
    for relative, text in entry_point(target, source).items():
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if target == "lambda":
        if reqs is not None:
            install_for_lambda(reqs, out_dir, pip_args)
    else:
        lines = reqs.read_text() if reqs is not None else ""
        header = "# The workers module's dependencies; the platform installs them. redisq's SDK is bundled.\n"
        (out_dir / "requirements.txt").write_text(header + lines)


def _is_lambdas_python() -> bool:
    return (sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11) and sys.platform == "linux"
            and platform.machine().lower() in ("x86_64", "amd64"))


def _can_import_here(bundle: Path) -> bool:
    """Whether this Python can import what pip installed for Lambda: always on Lambda's own
    platform and Python, else only when no dependency is compiled."""
    if _is_lambdas_python():
        return True
    return not any(p.suffix in (".so", ".pyd") for p in bundle.rglob("*") if p.is_file())


def check_entry_point(bundle: Path, entry: str, timeout_s: float = IMPORT_CHECK_TIMEOUT_S) -> None:
    """Import ``entry`` from ``bundle`` in a clean interpreter: isolated mode (no user site,
    no PYTHON* variables, not the working directory), no site-packages (``-S``: only the
    bundle and the standard library), no .pyc written into the bundle (``-B``). A module of
    Lambda's runtime (boto3, ...) missing here is not an error."""
    code = f"import sys; sys.path.insert(0, {str(bundle)!r}); import {entry}"
    env = dict(os.environ)
    if not env.get("REDISQ_SECRET") and not env.get("REDISQ_SIGNING_KEYS"):
        env["REDISQ_SECRET"] = CHECK_SECRET
    command = [sys.executable, "-I", "-S", "-B", "-c", code]
    try:
        result = subprocess.run(command, cwd=bundle, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise PackageError(f"the bundle's entry point ({entry}.py) did not finish importing within {timeout_s:g} s "
                           f"(checked with: python -I -S -c \"import {entry}\" in the bundle): does the workers "
                           "module wait for something at import?") from None
    if result.returncode == 0:
        return
    lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else f"exit status {result.returncode}"
    missing = last.partition("No module named ")[2].strip("'\"").split(".")[0]
    if last.startswith("ModuleNotFoundError") and missing in LAMBDA_RUNTIME_MODULES:
        log.warning("redisq package: the workers module imports %s, which Lambda's runtime provides; the import "
                    "check stopped there", missing)
        return
    raise PackageError(f"the bundle's entry point ({entry}.py) does not import in a clean Python (only the bundle "
                       f"and the standard library): {last}\n(checked with: {sys.executable} -I -S -c "
                       f"\"import {entry}\" in the bundle; a missing module belongs in requirements.txt)")


# The coordinator calls the function without the platform's auth (no IAM signature, no Google
# identity token): the function is public and the request signature is the authentication.
# A Lambda function URL with --auth-type NONE also needs the resource policy that lets anyone
# call it through the URL (the console adds it; the CLI does not).
DEPLOY_HINTS = {
    "lambda": ("cd {out} && zip -qr ../bundle.zip . && aws lambda create-function --function-name redisq-workers "
               "--runtime python3.11 --handler handler.handler --zip-file fileb://../bundle.zip --role <role-arn> "
               "--environment \"Variables={{REDISQ_SECRET=...}}\" && aws lambda create-function-url-config "
               "--function-name redisq-workers --auth-type NONE && aws lambda add-permission --function-name "
               "redisq-workers --statement-id public-url --action lambda:InvokeFunctionUrl --principal '*' "
               "--function-url-auth-type NONE && aws lambda add-permission --function-name redisq-workers "
               "--statement-id public-url-invoke --action lambda:InvokeFunction --principal '*' "
               "--invoked-via-function-url  # public: the signature is the authentication"),
    "gcf": ("gcloud functions deploy redisq-workers --gen2 --runtime python311 --trigger-http --allow-unauthenticated "
            "--entry-point main --source {out} --set-env-vars REDISQ_SECRET=...  # public: the signature is the "
            "authentication"),
    "vercel": "cd {out} && vercel env add REDISQ_SECRET && vercel deploy --prod",
}
