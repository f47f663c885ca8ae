"""The CLI starts light: `cxrdistill --help` must not import torch (or pandas)."""
import subprocess
import sys


def test_help_does_not_import_torch():
    code = ("import sys; from cxrdistill.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'pandas', 'timm', 'sklearn') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out, out
    assert "cohort" in out and "audit" in out


def test_user_error_is_one_line_exit_2(tmp_path):
    p = subprocess.run([sys.executable, "-m", "cxrdistill", "audit", str(tmp_path / "missing.csv"),
                        "--attribute", "sex", "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert "missing.csv" in p.stderr
    assert not (tmp_path / "o" / "audit.json").exists()


def test_usage_error_is_not_a_traceback():
    p = subprocess.run([sys.executable, "-m", "cxrdistill", "embed", "--teacher", "x"], capture_output=True,
                       text=True)
    assert p.returncode == 2
    assert "Missing option" in p.stderr and "Traceback" not in p.stderr
