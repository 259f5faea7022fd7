"""Integrations under faults: W&B without network, resumed W&B runs."""

from __future__ import annotations

from pathlib import Path

from tests.runner import TINY, run_inprocess

WANDB = ["+model=wgan", *[o for o in TINY if not o.startswith("logger")], "logger=wandb", "logger.mode=auto"]
FAKE_KEY = "0" * 40


def _warnings(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("pfbench: warning:")]


def _offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def test_wandb_without_dns_logs_offline_at_once(tmp_path, monkeypatch, capsys):
    # a compute node: an API key, but the W&B host does not resolve
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", "http://pfbench-no-such-host.invalid")
    rec = run_inprocess(WANDB, tmp_path)
    assert rec["status"] == "completed"
    warn = _warnings(capsys.readouterr().err)
    assert warn == [f"pfbench: warning: W&B host pfbench-no-such-host.invalid does not resolve (no network?); "
                    f"logging offline to {tmp_path / 'wandb'} (upload later with wandb sync)"]
    assert len(_offline_runs(tmp_path)) == 1


def test_wandb_unreachable_service_falls_back_offline(tmp_path, monkeypatch, capsys):
    # the host resolves but nothing answers: wandb.init gives up after logger.init_timeout, the run goes on
    import pfbench.tracking

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.setattr(pfbench.tracking, "host_resolves", lambda url, timeout=3.0: True)
    rec = run_inprocess([*WANDB, "logger.init_timeout=2"], tmp_path)
    assert rec["status"] == "completed"
    warn = _warnings(capsys.readouterr().err)
    assert len(warn) == 1 and warn[0].startswith("pfbench: warning: W&B did not start online (")
    assert warn[0].endswith(f"logging offline to {tmp_path / 'wandb'} (upload later with wandb sync)")
    assert len(_offline_runs(tmp_path)) == 1


def test_resumed_run_continues_its_wandb_run(tmp_path):
    ov = [*WANDB, "logger.mode=offline"]
    run_inprocess(ov, tmp_path)
    run_id = (tmp_path / "wandb/pfbench-run-id").read_text().strip()
    rec = run_inprocess([*ov, "model.train.steps=5", "resume=true"], tmp_path)
    assert rec["resumed_from"] == 3 and rec["steps"] == 5
    runs = _offline_runs(tmp_path)
    assert len(runs) == 2 and all(p.name.split("-")[-1] == run_id or p.name.split("-")[-2] == run_id
                                  for p in runs), runs
    run_inprocess([*ov, "overwrite=true"], tmp_path)  # a new run is a new W&B run
    assert (tmp_path / "wandb/pfbench-run-id").read_text().strip() != run_id
    assert len(_offline_runs(tmp_path)) == 1
