"""``redisq package``: bundles of examples/workers.py for each target, each imported in a
clean virtual environment (nothing installed, not even pip) and called with a sample
event of its platform."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from redisq.cli import main
from redisq.package import DEPLOY_HINTS, ENTRY_MODULES, SDK_FILES, TARGETS, PackageError, Source, build, entry_point

from sdk_helpers import dispatch_body, event, signed

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "workers.py"
KEY = "bundle-secret"


@pytest.fixture(scope="module")
def clean_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    venv = tmp_path_factory.mktemp("clean-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return str(venv / "bin" / "python")


def run_in(python: str, bundle: Path, code: str, *args: str) -> Any:
    """Run ``code`` in the bundle's directory with the clean interpreter; its last line of
    output, as JSON."""
    env = {"PATH": os.environ.get("PATH", ""), "REDISQ_SECRET": KEY}
    out = subprocess.run([python, "-c", code, *args], cwd=bundle, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


CHECK_ISOLATED = """
import json, os, sys
import redisq
assert os.path.realpath(redisq.__file__).startswith(os.path.realpath(os.getcwd())), redisq.__file__
for name in ("redis", "starlette", "httpx", "aiohttp"):
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(name + " is importable: the venv is not clean")
"""


def test_a_lambda_bundle_answers_a_function_url_event(tmp_path, clean_python):
    out = tmp_path / "lambda"
    entries = build(str(EXAMPLE), "lambda", out)
    assert entries == ["handler.py", "redisq", "workers.py"]
    assert sorted(p.name for p in (out / "redisq").iterdir()) == sorted(SDK_FILES)
    body = dispatch_body("send-email", {"to": "ada@example.com"})
    for name in ("function_url.json", "apigw_rest_v1.json"):
        (tmp_path / name).write_text(json.dumps(event(name, body, signed(body, KEY))))
        answer = run_in(clean_python, out, CHECK_ISOLATED + """
import handler
print(json.dumps(handler.handler(json.load(open(sys.argv[1])), None)))
""", str(tmp_path / name))
        assert answer["statusCode"] == 200, answer
        assert json.loads(answer["body"]) == {"sent": True, "to": "ada@example.com"}
    forged = event("function_url.json", body, signed(body, "not-the-key"))
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    answer = run_in(clean_python, out, "import handler, json, sys\n"
                    "print(json.dumps(handler.handler(json.load(open(sys.argv[1])), None)))",
                    str(tmp_path / "forged.json"))
    assert answer["statusCode"] == 401


def test_a_cloud_functions_bundle_answers_a_request(tmp_path, clean_python):
    out = tmp_path / "gcf"
    assert build(str(EXAMPLE), "gcf", out) == ["main.py", "redisq", "requirements.txt", "workers.py"]
    body = dispatch_body("send-email", {})  # no "to": a permanent failure
    headers = signed(body, KEY)
    (tmp_path / "request.json").write_text(json.dumps({"headers": headers, "body": body.decode()}))
    answer = run_in(clean_python, out, CHECK_ISOLATED + """
class Request:  # what the SDK uses of functions-framework's Flask request
    method = "POST"
    def __init__(self, data):
        self.headers, self._body = data["headers"], data["body"].encode()
    def get_data(self):
        return self._body
import main
print(json.dumps(main.main(Request(json.load(open(sys.argv[1]))))))
""", str(tmp_path / "request.json"))
    assert answer[:2] == ["PermanentFailure: args.to is required", 422]


def test_a_vercel_bundle_serves_asgi_from_api_index(tmp_path, clean_python):
    out = tmp_path / "vercel"
    assert build(str(EXAMPLE), "vercel", out) == ["api", "redisq", "requirements.txt", "vercel.json", "workers.py"]
    assert json.loads((out / "vercel.json").read_text()) == {
        "rewrites": [{"source": "/(.*)", "destination": "/api/index"}]}
    body = dispatch_body("send-email", {"to": "ada@example.com"})
    headers = signed(body, KEY)
    (tmp_path / "request.json").write_text(json.dumps({"headers": headers, "body": body.decode()}))
    answer = run_in(clean_python, out, CHECK_ISOLATED + """
import asyncio, importlib.util
spec = importlib.util.spec_from_file_location("index", "api/index.py")
index = importlib.util.module_from_spec(spec)
spec.loader.exec_module(index)
data = json.load(open(sys.argv[1]))
scope = {"type": "http", "method": "POST", "path": "/api/index",
         "headers": [(k.lower().encode(), v.encode()) for k, v in data["headers"].items()]}
sent = []
async def receive():
    return {"type": "http.request", "body": data["body"].encode(), "more_body": False}
async def send(message):
    sent.append(message)
asyncio.run(index.app(scope, receive, send))
print(json.dumps([sent[0]["status"], sent[1]["body"].decode()]))
""", str(tmp_path / "request.json"))
    assert answer[0] == 200 and json.loads(answer[1]) == {"sent": True, "to": "ada@example.com"}


def tiny_wheel(directory: Path) -> None:
    """A pure-Python wheel, made by hand, so pip needs no network."""
    dist = "tinydep-1.0.dist-info"
    files = {
        "tinydep/__init__.py": "VALUE = 42\n",
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: tinydep\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{name},,\n" for name in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(directory / "tinydep-1.0-py3-none-any.whl", "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)


def test_lambda_dependencies_are_installed_into_the_bundle_for_lambdas_python(tmp_path, clean_python):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    tiny_wheel(wheels)
    module = tmp_path / "src" / "shopjobs.py"
    module.parent.mkdir()
    module.write_text("import tinydep\nfrom redisq.worker import Workers\nworkers = Workers()\n\n"
                      "@workers.job('count')\ndef count(args):\n    return tinydep.VALUE\n")
    (module.parent / "requirements.txt").write_text("tinydep==1.0\n")
    out = tmp_path / "bundle"
    entries = build(str(module), "lambda", out, pip_args=["--no-index", f"--find-links={wheels}"])
    assert "tinydep" in entries and "shopjobs.py" in entries
    body = dispatch_body("count")
    (tmp_path / "event.json").write_text(json.dumps(event("apigw_http_v2.json", body, signed(body, KEY))))
    answer = run_in(clean_python, out, "import handler, json, sys\n"
                    "print(json.dumps(handler.handler(json.load(open(sys.argv[1])), None)))",
                    str(tmp_path / "event.json"))
    assert (answer["statusCode"], answer["body"]) == (200, "42")


def test_gcf_and_vercel_list_the_requirements_for_the_platform_to_install(tmp_path):
    module = tmp_path / "jobs.py"
    module.write_text("from redisq.worker import Workers\nworkers = Workers(secret='x')\n")
    requirements = tmp_path / "deps.txt"
    requirements.write_text("requests==2.32.3\n")
    build(str(module), "gcf", tmp_path / "gcf", requirements=str(requirements))
    assert "requests==2.32.3" in (tmp_path / "gcf" / "requirements.txt").read_text().splitlines()


def test_package_refuses_what_it_cannot_bundle(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(PackageError, match="not empty"):
        build(str(EXAMPLE), "lambda", tmp_path / "full")
    with pytest.raises(PackageError, match="no such file"):
        build(str(tmp_path / "missing.py"), "gcf", tmp_path / "out")
    assert main(["package", str(tmp_path / "missing.py"), "--target", "vercel", "--out", str(tmp_path / "o")]) == 2
    assert "redisq: package error:" in capsys.readouterr().err


def test_the_cli_builds_a_bundle_and_prints_the_deploy_step(tmp_path, capsys):
    assert main(["package", f"{EXAMPLE}:workers", "--target", "gcf", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "gcloud functions deploy" in out and "--entry-point main" in out and "--allow-unauthenticated" in out


WORKERS_SOURCE = "from redisq.worker import Workers\nworkers = Workers(secret='x')\n"


def write(path: Path, text: str = WORKERS_SOURCE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("target, name",
                         [("lambda", "handler"), ("gcf", "main"), ("vercel", "api"), ("vercel", "index")])
def test_a_module_named_like_the_entry_point_is_refused(tmp_path, target, name):
    for source in (write(tmp_path / "file" / f"{name}.py"), write(tmp_path / "pkg" / name / "__init__.py").parent):
        with pytest.raises(PackageError, match=f"named {name!r} would collide with the {target} entry point"):
            build(str(source), target, tmp_path / f"out-{target}")
        assert not (tmp_path / f"out-{target}").exists()
    other = next(t for t in ("lambda", "gcf") if name not in ENTRY_MODULES[t])
    assert build(str(tmp_path / "file" / f"{name}.py"), other, tmp_path / "ok")  # only its own target refuses it


def test_the_entry_modules_are_those_the_entry_points_write():
    source = Source(Path("jobs.py"), "jobs", "workers")
    for target in TARGETS:
        written = {Path(p).parts[0].removesuffix(".py") for p in entry_point(target, source) if p.endswith(".py")}
        written |= {Path(p).stem for p in entry_point(target, source) if p.endswith(".py")}
        assert set(ENTRY_MODULES[target]) == written


def test_a_file_inside_a_package_is_refused_for_the_package_directory(tmp_path):
    write(tmp_path / "shop" / "__init__.py", "")
    inner = write(tmp_path / "shop" / "jobs.py", "from . import api\n" + WORKERS_SOURCE)
    with pytest.raises(PackageError, match=r"jobs.py is part of the package shop .*package the package directory"):
        build(str(inner), "gcf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_workers_object_must_be_defined_or_imported(tmp_path):
    plain = write(tmp_path / "plain.py", "from redisq.worker import Workers\napp = Workers(secret='x')\n")
    with pytest.raises(PackageError, match="plain.py: defines or imports no 'workers'"):
        build(str(plain), "gcf", tmp_path / "a")
    assert build(f"{plain}:app", "gcf", tmp_path / "b")
    with pytest.raises(PackageError, match="defines or imports no 'missing'"):
        build(f"{plain}:missing", "gcf", tmp_path / "c")
    write(tmp_path / "pkg" / "__init__.py", "from .jobs import app  # not workers\n")
    write(tmp_path / "pkg" / "workers.py", WORKERS_SOURCE)
    with pytest.raises(PackageError, match=r"__init__.py: defines or imports no 'workers'.*pkg.workers is a submodule"):
        build(str(tmp_path / "pkg"), "vercel", tmp_path / "d")
    write(tmp_path / "pkg" / "__init__.py", "try:\n    from .workers import workers\nexcept ImportError:\n    raise\n")
    assert "pkg" in build(str(tmp_path / "pkg"), "vercel", tmp_path / "e")
    broken = write(tmp_path / "broken.py", "workers = (\n")
    with pytest.raises(PackageError, match="broken.py: cannot be parsed"):
        build(str(broken), "gcf", tmp_path / "f")


def test_a_packages_requirements_are_beside_it_not_in_it(tmp_path):
    write(tmp_path / "src" / "shop" / "__init__.py")
    write(tmp_path / "src" / "requirements.txt", "requests==2.32.3\n")
    build(str(tmp_path / "src" / "shop"), "gcf", tmp_path / "gcf")
    assert "requests==2.32.3" in (tmp_path / "gcf" / "requirements.txt").read_text().splitlines()
    (tmp_path / "src" / "requirements.txt").unlink()
    write(tmp_path / "src" / "shop" / "requirements.txt", "requests==2.32.3\n")
    with pytest.raises(PackageError, match="looked for beside the package, not in it"):
        build(str(tmp_path / "src" / "shop"), "gcf", tmp_path / "gcf2")
    build(str(tmp_path / "src" / "shop"), "gcf", tmp_path / "gcf3",
          requirements=str(tmp_path / "src" / "shop" / "requirements.txt"))
    assert "requests==2.32.3" in (tmp_path / "gcf3" / "requirements.txt").read_text().splitlines()


def test_out_naming_a_file_is_a_package_error(tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    with pytest.raises(PackageError, match="exists and is not a directory"):
        build(str(EXAMPLE), "gcf", tmp_path / "taken")
    with pytest.raises(PackageError, match="taken"):
        build(str(EXAMPLE), "gcf", tmp_path / "taken" / "below")
    assert main(["package", str(EXAMPLE), "--target", "gcf", "--out", str(tmp_path / "taken")]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err


def test_a_failed_build_leaves_nothing_so_a_rerun_works(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    tiny_wheel(wheels)
    module = write(tmp_path / "src" / "shopjobs.py", "import tinydep\n" + WORKERS_SOURCE)
    requirements = write(tmp_path / "src" / "requirements.txt", "tinydep==9.9\n")  # not in the wheels
    parent = tmp_path / "build"
    offline = ["--no-index", f"--find-links={wheels}"]
    with pytest.raises(PackageError, match="pip could not install"):
        build(str(module), "lambda", parent / "deeper" / "lambda", pip_args=offline)
    assert not parent.exists()  # nor the directories made for --out
    (parent / "empty").mkdir(parents=True)  # an empty --out given is kept when the build fails
    with pytest.raises(PackageError, match="pip could not install"):
        build(str(module), "lambda", parent / "empty", pip_args=offline)
    assert sorted(p.name for p in parent.iterdir()) == ["empty"] and list((parent / "empty").iterdir()) == []
    requirements.write_text("tinydep==1.0\n")
    assert "tinydep" in build(str(module), "lambda", parent / "lambda", pip_args=offline)
    assert "tinydep" in build(str(module), "lambda", parent / "empty", pip_args=offline)
    assert sorted(p.name for p in parent.iterdir()) == ["empty", "lambda"]  # no partial directory left
    (tmp_path / "reference").mkdir()  # the bundle's directories have the umask's mode, not a temp dir's 0700
    assert (parent / "lambda").stat().st_mode == (tmp_path / "reference").stat().st_mode


def test_the_deploy_hints_make_the_function_public_as_the_readme_says():
    assert "--allow-unauthenticated" in DEPLOY_HINTS["gcf"]
    assert ("aws lambda create-function-url-config --function-name redisq-workers --auth-type NONE"
            in DEPLOY_HINTS["lambda"])


def test_a_lambda_bundle_whose_entry_point_does_not_import_is_refused(tmp_path):
    module = write(tmp_path / "src" / "jobs.py", "import nosuchdep\n" + WORKERS_SOURCE)
    with pytest.raises(PackageError, match=r"does not import in a clean Python.*ModuleNotFoundError: No module named "
                                           r"'nosuchdep'") as refused:
        build(str(module), "lambda", tmp_path / "out")
    assert "Traceback" not in str(refused.value) and not (tmp_path / "out").exists()
    # installed here (this venv has httpx) but not in the bundle: still missing, as on Lambda
    write(module, "import httpx\n" + WORKERS_SOURCE)
    with pytest.raises(PackageError, match="No module named 'httpx'"):
        build(str(module), "lambda", tmp_path / "out")
    write(module, "raise RuntimeError('no config at import')\n" + WORKERS_SOURCE)
    with pytest.raises(PackageError, match="RuntimeError: no config at import"):
        build(str(module), "lambda", tmp_path / "out")
    # gcf and vercel bundles get their dependencies at deploy: not imported here
    assert build(str(module), "gcf", tmp_path / "gcf")
    # Workers() reading REDISQ_SECRET at import, and boto3 (Lambda's runtime has it), pass
    write(module, "import boto3\nfrom redisq.worker import Workers\nworkers = Workers()\n")
    assert "jobs.py" in build(str(module), "lambda", tmp_path / "out")
    assert not list((tmp_path / "out").rglob("__pycache__"))  # the check wrote no .pyc into the bundle


def test_the_import_check_is_skipped_only_for_compiled_dependencies_this_python_cannot_load(tmp_path, monkeypatch):
    import redisq.package as package

    write(tmp_path / "bundle" / "dep" / "__init__.py", "")
    assert package._can_import_here(tmp_path / "bundle")
    (tmp_path / "bundle" / "dep" / "_speedups.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    assert package._can_import_here(tmp_path / "bundle") == package._is_lambdas_python()
    monkeypatch.setattr(package, "_is_lambdas_python", lambda: False)
    assert not package._can_import_here(tmp_path / "bundle")
    module = write(tmp_path / "src" / "jobs.py", "import nosuchdep\n" + WORKERS_SOURCE)
    assert "jobs.py" in build(str(module), "lambda", tmp_path / "unchecked", check_import=False)
