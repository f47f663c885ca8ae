"""The command line as a whole: every command listed and its ``--help`` working, one vocabulary of options across
commands, the old spellings still accepted (hidden), and the one JSON summary line every command ends with."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import typer

from cxrdistill import __version__
from cxrdistill.cli import build_app, click_command, command_path, main
from cxrdistill.commands import _common as C

#: every visible command, as typed after ``cxrdistill``
COMMANDS = [
    "audit", "audit-features", "compare", "probe-attributes",
    "cohort import chexpert", "cohort import mimic", "cohort import nih", "cohort import padchest", "cohort split",
    "cohort info",
    "demo", "study",
    "distill", "probe", "finetune", "evaluate", "export-onnx",
    "embed", "embeddings import", "embeddings info", "embeddings export", "embeddings merge", "embeddings compact",
    "fair run", "fair seg", "fair distill-study",
    "images cache",
    "pretrain run", "pretrain finetune", "pretrain grid",
    "synth",
    "teacher serve", "teacher info", "teacher pretrain",
]
#: old spellings that still work but are no longer listed
HIDDEN = ["fair-seg", "fair-distill-study", "pretrain-finetune", "pretrain-grid"]
#: commands that run torch models and so take --device (embed, teacher serve and teacher info: for a teacher run in
#: this process)
TORCH_MODELS = ["distill", "probe", "finetune", "fair run", "fair seg", "fair distill-study", "pretrain run",
                "pretrain finetune", "pretrain grid", "teacher pretrain", "evaluate", "export-onnx", "embed",
                "teacher serve", "teacher info"]


def _walk(cmd, path=()):
    subs = getattr(cmd, "commands", None)
    if subs:
        for name, sub in subs.items():
            yield from _walk(sub, (*path, name))
    else:
        yield " ".join(path), cmd


@pytest.fixture(scope="module")
def tree():
    return dict(_walk(click_command()))


def _visible(tree):
    root = click_command()

    def hidden(path):
        cur = root
        for part in path.split():
            cur = cur.commands[part]
            if getattr(cur, "hidden", False):
                return True
        return False

    return {p: c for p, c in tree.items() if not hidden(p)}


def _options(cmd):
    return [p for p in cmd.params if p.param_type_name == "option" and not getattr(p, "hidden", False)]


def _opt(cmd, name):
    for p in cmd.params:
        if name in p.opts or name in getattr(p, "secondary_opts", []):
            return p
    return None


def _help(argv):
    try:
        main(argv)
    except SystemExit as e:
        assert e.code in (0, None)


# ---------------------------------------------------------------------------------------------- start-up
def test_version(capsys):
    main(["--version"])
    assert capsys.readouterr().out.strip() == f"cxrdistill {__version__}"


def test_a_missing_command_module_is_an_error_at_start_up():
    with pytest.raises(RuntimeError, match="cxrdistill.commands.no_such_area cannot be imported"):
        build_app(["audit", "no_such_area"])


def test_every_command_is_listed(tree):
    assert sorted(_visible(tree)) == sorted(COMMANDS)
    assert sorted(set(tree) - set(_visible(tree))) == sorted(HIDDEN)


@pytest.mark.parametrize("path", COMMANDS + HIDDEN)
def test_help_of_every_command(path, capsys):
    _help([*path.split(), "--help"])
    out = capsys.readouterr().out
    assert "Usage: cxrdistill" in out and "<bool>" not in out


def test_root_help_lists_families_not_old_spellings(capsys):
    _help(["--help"])
    out = capsys.readouterr().out
    for name in ("fair", "pretrain", "cohort", "embeddings", "teacher", "--version"):
        assert name in out
    for old in HIDDEN:
        assert old not in out


def test_old_spellings_reach_the_new_commands():
    root = click_command()
    assert command_path(["fair", "--cohort", "c.parquet", "-a", "sex"], root) == "fair run"
    assert command_path(["pretrain", "--cohort", "c.parquet"], root) == "pretrain run"
    assert command_path(["fair", "seg", "--cohort", "c"], root) == "fair seg"
    assert command_path(["pretrain-grid", "--out", "o"], root) == "pretrain-grid"
    assert command_path(["cohort", "import", "nih", "--csv", "x"], root) == "cohort import nih"


# ---------------------------------------------------------------------------------------------- help text
def test_every_option_has_help_text(tree):
    missing = [f"{p} {o.opts[0]}" for p, c in _visible(tree).items() for o in _options(c) if not (o.help or "").strip()]
    assert not missing, missing


def test_bracketed_defaults_in_help_are_shown_as_written(capsys):
    """A help text's "[auto]" is text, not rich markup to be dropped."""
    _help(["distill", "--help"])
    out = capsys.readouterr().out
    assert "[mobilenetv3_small_050]" in out and "[auto]" in out and "[distill]" in out


def test_flags_have_no_value_placeholder_and_defaults_show_once(tree):
    twice = []
    for path, c in _visible(tree).items():
        for o in _options(c):
            if o.is_flag:
                assert o.metavar == "", (path, o.opts)
            d = o.default
            if d is None or d is False or d == [] or callable(d) or not o.show_default:
                continue
            if re.search(r"\[[^\]]*\]\s*$", o.help or "") or "default" in (o.help or "").lower():
                twice.append(f"{path} {o.opts[0]}: {o.help!r} (default {d!r})")
    assert not twice, twice


# ---------------------------------------------------------------------------------------------- one vocabulary
def test_outputs_are_out_everywhere(tree):
    for path, c in _visible(tree).items():
        for p in c.params:
            if p.name == "out" and not getattr(p, "hidden", False):
                assert p.param_type_name == "option" and "--out" in p.opts and "-o" in p.opts, path
        assert not [p for p in c.params if p.param_type_name == "argument" and p.name.startswith("out")
                    and not getattr(p, "hidden", False)], path


def test_a_short_flag_means_one_thing(tree):
    meaning: dict[str, set] = {}
    for c in _visible(tree).values():
        for o in _options(c):
            longs = [x for x in o.opts if x.startswith("--")]
            for short in (x for x in o.opts if re.fullmatch(r"-\w", x)):
                meaning.setdefault(short, set()).add(longs[0] if longs else o.name)
    assert {k: v for k, v in meaning.items() if len(v) > 1} == {}
    assert meaning["-f"] == {"--features"} and meaning["-o"] == {"--out"} and meaning["-a"] == {"--attribute"}


def test_shared_options_have_one_spelling_one_default_and_one_meaning(tree):
    vis = _visible(tree)
    for path, c in vis.items():
        names = {x for p in c.params if not getattr(p, "hidden", False) for x in [*p.opts, *p.secondary_opts]}
        for old in ("--skip-bad-images", "--missing", "--drop-missing-scores", "--image-size", "--mode"):
            assert old not in names, (path, old)
        if (a := _opt(c, "--attribute")) is not None:
            assert a.multiple and "-a" in a.opts, path
        if (b := _opt(c, "--n-boot")) is not None:
            assert b.default in (C.N_BOOT, None), path
        if (g := _opt(c, "--age-bins")) is not None:
            assert g.default is None and C.AGE_BINS in g.help, path
        if (q := _opt(c, "--quiet")) is not None:
            assert q.help == C.QUIET_HELP, path
        if (p := _opt(c, "--progress")) is not None:
            assert p.help == C.PROGRESS_HELP, path
        if (e := _opt(c, "--on-error")) is not None:
            assert e.default == "fail", path
        if (s := _opt(c, "--seeds")) is not None:
            assert not s.is_flag, path
    for path in TORCH_MODELS:
        assert _opt(vis[path], "--device") is not None, path
    assert sorted(p for p, c in vis.items() if _opt(c, "--device") is not None) == sorted(TORCH_MODELS)
    for path in ("distill", "probe", "finetune", "pretrain run", "pretrain finetune", "study", "synth"):
        assert _opt(vis[path], "--seed") is not None, path
    for path in ("fair run", "fair seg", "fair distill-study", "pretrain grid"):
        assert _opt(vis[path], "--seeds") is not None, path
    for path in ("distill", "probe", "finetune", "pretrain run", "pretrain finetune", "pretrain grid", "study", "demo",
                 "fair run", "fair seg", "fair distill-study"):
        assert _opt(vis[path], "--fresh") is not None, path


def test_audit_tasks_take_the_shared_spelling_and_the_old_one(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 120
    pd.DataFrame({"image_id": [f"i{i}" for i in range(n)], "sex": rng.choice(["F", "M"], n),
                  **{f"{k}_{t}": (rng.integers(0, 2, n) if k == "y" else rng.random(n))
                     for t in ("a", "b", "c") for k in ("y", "p")}}).to_csv(tmp_path / "pred.csv", index=False)
    audited = []
    for tasks in (["--tasks", "a,c"], ["--tasks", "a", "--tasks", "c"], ["-t", "a", "--task", "c"]):
        main(["audit", str(tmp_path / "pred.csv"), "-a", "sex", "--n-boot", "0", "--out", str(tmp_path / "o"), *tasks])
        audited.append(sorted(json.loads((tmp_path / "o" / "audit.json").read_text())["tasks"]))
    assert audited == [["a", "c"]] * 3
    capsys.readouterr()


def test_parse_seeds_and_on_error():
    from cxrdistill.errors import InputError

    assert C.parse_seeds("0,1, 2") == [0, 1, 2] and C.parse_seeds(["3", "4,5"]) == [3, 4, 5]
    assert C.parse_seeds(None) is None
    with pytest.raises(InputError, match="--seeds 'a,1' must be integers"):
        C.parse_seeds("a,1")
    assert C.on_error_mode("skip") == "skip" and C.on_error_mode("raise") == "fail"
    assert C.on_error_mode("fail", skip_alias=True) == "skip"
    with pytest.raises(InputError, match="--missing must be one of fail, skip"):
        C.on_error_mode("ignore", option="--missing")


# ---------------------------------------------------------------------------------------------- the summary line
def _last_json(capsys) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def test_every_command_ends_with_the_json_summary(tmp_path, capsys):
    main(["synth", "--out", str(tmp_path / "ds"), "--n", "40", "--size", "16", "--seed", "3", "--workers", "1"])
    s = _last_json(capsys)
    assert s == {"command": "synth", "status": "ok", "out": str(tmp_path / "ds"), "images": 40,
                 "patients": s["patients"], "size": 16, "scenario": "none"}

    main(["synth", str(tmp_path / "old"), "--n", "8", "--size", "16", "--workers", "1"])  # the old positional OUT
    assert _last_json(capsys)["out"] == str(tmp_path / "old")

    cohort = tmp_path / "cohort.parquet"
    main(["cohort", "import", "chexpert", "--csv", str(tmp_path / "ds" / "train.csv"), "--out", str(cohort)])
    s = _last_json(capsys)
    assert (s["command"], s["status"], s["out"], s["images"]) == ("cohort import chexpert", "ok", str(cohort), 40)

    main(["cohort", "split", str(cohort), "-o", str(cohort), "--seed", "1"])
    s = _last_json(capsys)
    assert s["command"] == "cohort split" and sum(s["splits"].values()) == 40

    df = pd.read_parquet(cohort)
    rng = np.random.default_rng(0)
    pred = pd.DataFrame({"image_id": df["image_id"], "sex": df["sex"],
                         "y_edema": rng.integers(0, 2, len(df)), "p_edema": rng.random(len(df))})
    pred.to_csv(tmp_path / "pred.csv", index=False)
    main(["audit", str(tmp_path / "pred.csv"), "-a", "sex", "--n-boot", "0", "--min-n", "1",
          "--out", str(tmp_path / "audit")])
    s = _last_json(capsys)
    assert (s["command"], s["status"], s["out"]) == ("audit", "ok", str(tmp_path / "audit"))
    assert s["n_tests"] == json.loads((tmp_path / "audit" / "audit.json").read_text())["n_tests"]


def test_a_failed_command_ends_with_an_error_summary(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["audit", str(tmp_path / "missing.csv"), "-a", "sex", "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    s = _last_json(capsys)
    assert s["command"] == "audit" and s["status"] == "error" and "missing.csv" in s["error"]
    assert s["out"] == str(tmp_path / "o")


def test_ctrl_c_ends_with_an_interrupted_summary(tmp_path):
    """A real SIGINT to a running command (its own process, as a user's Ctrl-C): exit status 130, "interrupted" on
    stderr, and the summary line."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-m", "cxrdistill", "synth", "--out", str(out), "--n", "100000",
                             "--size", "32", "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not any(tmp_path.rglob("*.png")):  # interrupt it while it renders (into a temporary folder)
            assert proc.poll() is None and time.monotonic() < deadline, "synth ended or never started rendering"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == "interrupted"
    s = json.loads(stdout.strip().splitlines()[-1])
    assert (s["command"], s["status"], s["out"]) == ("synth", "interrupted", str(out))


def test_summary_is_strict_json(capsys):
    C.summary("x", None, v=float("nan"), path=typer, arr=np.float32(1.5), n=np.int64(3))
    s = _last_json(capsys)
    assert s["v"] is None and s["arr"] == 1.5 and s["n"] == 3 and isinstance(s["path"], str)


def test_every_command_ends_through_the_one_summary_helper(tree):
    """Each command's function (or the helper it hands its result to) calls the shared summary writer."""
    import inspect

    import cxrdistill.commands._common as common

    helpers = ("C.summary(", "summary(", "_print_summary(", "_print(", "_run_import(")
    for path, c in tree.items():
        src = inspect.getsource(c.callback)
        assert any(h in src for h in helpers), f"{path} does not end with the JSON summary line"
    assert "def summary(" in inspect.getsource(common)
