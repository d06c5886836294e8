"""Stored results, migrations, tokens, settings and sweep paths."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from ember.results import SpikeChunk
from sqlalchemy import inspect, select, update

from service import cli, sweeps
from service.auth import authenticate, create_token, list_tokens, revoke_token
from service.config import Settings
from service.db import results
from service.db.models import Base, Job, SpikeChunk as SpikeChunkRow
from service.db.session import make_engine, make_session_factory, transaction, upgrade_database
from service.jobs import NewJob, insert_job
from service.auth import get_or_create_user
from service.testing import fresh_database
from worker.store import DatabaseStore, LeaseLost, read_parameters


@pytest.fixture
def factory(tmp_path: Path):
    engine, factory = fresh_database(tmp_path / "jobs.sqlite")
    yield factory
    engine.dispose()


def running_job(factory, token: str = "t" * 32) -> str:
    with transaction(factory) as session:
        user = get_or_create_user(session, "alice")
        job = insert_job(session, owner=user, new=NewJob(spec={}, estimate={}, queue="cpu", tags=[]), max_attempts=3)
        job.status, job.lease_token = "running", token
        return job.id


# ---------------------------------------------------------------- blobs


def test_blob_round_trip_in_chunks(factory) -> None:
    job_id = running_job(factory)
    data = bytes(np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8))
    with transaction(factory) as session:
        blob = results.write_blob(session, job_id=job_id, name="artifacts/x.bin", data=data, media_type="application/octet-stream", chunk_bytes=64)
        assert blob.size == 1000
        assert blob.sha256 == hashlib.sha256(data).hexdigest()
    with factory() as session:
        blob = results.find_blob(session, job_id=job_id, name="artifacts/x.bin")
        pieces = session.scalars(select(results.BlobChunk.data).where(results.BlobChunk.blob_id == blob.id)).all()
        assert [len(piece) for piece in pieces] == [64] * 15 + [40]
        assert results.read_blob(session, blob) == data
        for start, stop in ((0, 1), (63, 65), (100, 999), (990, 1000), (500, 2000)):
            assert b"".join(results.iter_blob_bytes(session, blob, start, stop)) == data[start:stop]


def test_blob_replaced_and_corruption_detected(factory) -> None:
    job_id = running_job(factory)
    with transaction(factory) as session:
        results.write_blob(session, job_id=job_id, name="metrics.json", data=b"old", media_type="application/json", chunk_bytes=2)
        results.write_blob(session, job_id=job_id, name="metrics.json", data=b"newer", media_type="application/json", chunk_bytes=2)
    with transaction(factory) as session:
        blob = results.find_blob(session, job_id=job_id, name="metrics.json")
        assert results.read_blob(session, blob) == b"newer"
        session.execute(update(results.BlobChunk).where(results.BlobChunk.blob_id == blob.id, results.BlobChunk.seq == 0).values(data=b"XX"))
    with factory() as session:
        blob = results.find_blob(session, job_id=job_id, name="metrics.json")
        with pytest.raises(ValueError, match="is corrupt"):
            results.read_blob(session, blob)


# --------------------------------------------------------------- spikes


def test_window_reads_only_overlapping_chunks(factory, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = running_job(factory)
    step = np.repeat(np.arange(0, 1000, 10), 2)  # 200 records, 2 per step, steps 0..990
    index = np.tile([0, 1], 100)
    with transaction(factory) as session:
        written = results.write_spikes(
            session, job_id=job_id, monitor="m", records=results.SpikeArrays(step, index, None), dt=1.0, shape=[2], chunk_events=20
        )
    assert written == 10
    with factory() as session:
        ranges = session.execute(select(SpikeChunkRow.step_start, SpikeChunkRow.step_stop).order_by(SpikeChunkRow.step_start)).all()
    assert ranges[:2] == [(0, 91), (100, 191)]
    decoded = []
    original = results.SpikeArrays.from_npz.__func__

    def counting(cls, data):
        decoded.append(1)
        return original(cls, data)

    monkeypatch.setattr(results.SpikeArrays, "from_npz", classmethod(counting))
    with factory() as session:
        page = results.query_spikes(
            session, job_id=job_id, monitor="m", batched=False, step_start=250, step_stop=350, neurons=None, cursor=None, limit=1000
        )
    assert page.records.step.tolist() == [250, 250, 260, 260, 270, 270, 280, 280, 290, 290, 300, 300, 310, 310, 320, 320, 330, 330, 340, 340]
    assert len(decoded) == 2


def test_spikes_with_samples_round_trip(factory) -> None:
    job_id = running_job(factory)
    store = DatabaseStore(factory, job_id, "t" * 32, spike_chunk_events=3)
    chunk = SpikeChunk(step=np.array([5, 1, 3, 3]), index=np.array([2, 0, 1, 0]), sample=np.array([1, 0, 0, 0]), dt=0.5, shape=(2, 2))
    store.put_spikes("cells", chunk)
    store.put_spikes("cells", chunk)  # a chunk stored twice is read once
    back = store.read_spikes("cells")
    expected = chunk.canonical()
    np.testing.assert_array_equal(back.step, expected.step)
    np.testing.assert_array_equal(back.index, expected.index)
    np.testing.assert_array_equal(back.sample, expected.sample)
    assert (back.dt, back.shape) == (0.5, (2, 2))
    with pytest.raises(ValueError, match="was stored with dt 0.5 ms"):
        store.put_spikes("cells", SpikeChunk(step=np.array([1]), index=np.array([0]), sample=np.array([0]), dt=1.0, shape=(2, 2)))


def test_cursor_rejects_forgeries() -> None:
    cursor = results.SpikeCursor(10, 3, 7)
    assert results.SpikeCursor.decode(cursor.encode()) == cursor
    for text in ("", "abc", "WzEsMiwtM10", "eyJhIjogMX0"):
        with pytest.raises(ValueError, match="not one returned by a previous page"):
            results.SpikeCursor.decode(text)


def test_ms_bounds_to_steps() -> None:
    assert results.ms_to_step_bound(0.0, 0.1) == 0
    assert results.ms_to_step_bound(0.3, 0.1) == 3  # 0.3 / 0.1 is 2.9999999999999996
    assert results.ms_to_step_bound(0.35, 0.1) == 4
    assert results.ms_to_step_bound(10.0, 1.0) == 10


# ---------------------------------------------------------------- store


def test_store_holds_final_results_until_finalize(factory) -> None:
    job_id = running_job(factory)
    store = DatabaseStore(factory, job_id, "t" * 32, chunk_bytes=1024)
    weights = {"drive.weight": torch.randn(40, 30, generator=torch.Generator().manual_seed(0))}
    store.put_parameters(weights)
    store.put_metrics({"accuracy": 0.5, "rate": float("nan")})
    store.put_plot("raster", b"\x89PNG\r\n\x1a\nrest")
    store.put_artifact("state.npz", b"abc")
    assert read_parameters(factory, job_id) is None
    with transaction(factory) as session:
        assert store.write_pending(session) == 4
    assert torch.equal(read_parameters(factory, job_id)["drive.weight"], weights["drive.weight"])
    assert store.pending_metrics == {"accuracy": 0.5, "rate": None}
    with factory() as session:
        names = [blob.name for blob in results.list_blobs(session, job_id=job_id)]
    assert names == ["artifacts/state.npz", "metrics.json", "parameters.safetensors", "plots/raster.png"]


def test_store_rejects_bad_names_and_data(factory) -> None:
    store = DatabaseStore(factory, running_job(factory), "t" * 32)
    with pytest.raises(ValueError, match="is not PNG data"):
        store.put_plot("raster", b"GIF89a")
    with pytest.raises(ValueError, match="artifact name '../x' is invalid"):
        store.put_artifact("../x", b"")
    with pytest.raises(ValueError, match="monitor name 'a/b' is invalid"):
        store.put_spikes("a/b", SpikeChunk(step=np.array([1]), index=np.array([0]), sample=None, dt=1.0, shape=(1,)))


def test_checkpoint_round_trip_and_sealing(factory) -> None:
    job_id = running_job(factory)
    store = DatabaseStore(factory, job_id, "t" * 32, chunk_bytes=100)
    assert store.load_checkpoint() is None
    first = SpikeChunk(step=np.array([1, 2]), index=np.array([0, 0]), sample=None, dt=1.0, shape=(1,))
    later = SpikeChunk(step=np.array([7]), index=np.array([0]), sample=None, dt=1.0, shape=(1,))
    store.put_spikes("m", first)
    tensors = {"v": torch.linspace(0, 1, 50, dtype=torch.float64), "count": torch.tensor([3], dtype=torch.int64)}
    store.save_checkpoint(tensors, {"phase": 1, "offset": 20})
    store.put_spikes("m", later)
    loaded, meta = store.load_checkpoint()
    assert meta == {"phase": 1, "offset": 20}
    assert torch.equal(loaded["v"], tensors["v"])
    assert torch.equal(loaded["count"], tensors["count"])
    # A new attempt resumes from the checkpoint and drops what came after it.
    assert store.prepare_attempt() is True
    assert store.read_spikes("m").step.tolist() == [1, 2]


def test_attempt_without_checkpoint_starts_clean(factory) -> None:
    job_id = running_job(factory)
    store = DatabaseStore(factory, job_id, "t" * 32)
    store.put_spikes("m", SpikeChunk(step=np.array([1]), index=np.array([0]), sample=None, dt=1.0, shape=(1,)))
    assert store.prepare_attempt() is False
    with pytest.raises(KeyError):
        store.read_spikes("m")


def test_store_write_after_lease_lost(factory) -> None:
    job_id = running_job(factory)
    store = DatabaseStore(factory, job_id, "mine" + "0" * 28)
    with pytest.raises(LeaseLost, match=f"job {job_id} is no longer held by this worker"):
        store.save_checkpoint({"x": torch.zeros(1)}, {})
    with factory() as session:
        assert results.find_blob(session, job_id=job_id, name="checkpoint.json") is None


# ----------------------------------------------------------- migrations


def test_migrations_match_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'migrated.sqlite'}"
    upgrade_database(url)
    engine = make_engine(url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == []
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    assert "alembic_version" in inspect(engine).get_table_names()
    engine.dispose()
    upgrade_database(url, "base")
    upgrade_database(url)


# --------------------------------------------------------------- tokens


def test_tokens_are_hashed_and_revocable(factory) -> None:
    with transaction(factory) as session:
        created = create_token(session, user_name="carol", is_admin=True)
    assert created.token.startswith("ember_")
    assert len(created.token) == 49
    with factory() as session:
        stored = list_tokens(session)[0]
        assert stored.token_sha256 == hashlib.sha256(created.token.encode()).hexdigest()
        assert created.token not in (stored.prefix, stored.token_sha256)
        assert authenticate(session, created.token).name == "carol"
        assert authenticate(session, "ember_" + "A" * 43) is None
        assert authenticate(session, "garbage") is None
    with transaction(factory) as session:
        with pytest.raises(ValueError, match="is too short"):
            revoke_token(session, "ember_")
        assert revoke_token(session, created.token) == 1
    with factory() as session:
        assert authenticate(session, created.token) is None


def test_user_names_are_checked(factory) -> None:
    with transaction(factory) as session:
        with pytest.raises(ValueError, match="user name 'a b' is invalid"):
            create_token(session, user_name="a b")


def test_token_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("EMBER_DATA_DIR", str(tmp_path / "data"))
    assert cli.main(["db", "upgrade"]) == 0
    assert capsys.readouterr().out == "database at revision head\n"
    assert cli.main(["token", "create", "--user", "dave", "--admin"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("ember_")
    assert cli.main(["token", "list"]) == 0
    listing = capsys.readouterr().out
    assert f"{token[:14]}..." in listing
    assert "dave" in listing
    assert "admin" in listing
    assert token not in listing
    assert cli.main(["token", "revoke", token[:14]]) == 0
    assert cli.main(["token", "revoke", token[:14]]) == 1
    assert "no active token starts with" in capsys.readouterr().err
    assert cli.main(["token", "create", "--user", "bad name"]) == 2


# ------------------------------------------------------------- settings


def test_public_bind_needs_auth(tmp_path: Path) -> None:
    Settings(data_dir=tmp_path, host="127.0.0.1").check_bind()
    Settings(data_dir=tmp_path, host="0.0.0.0", auth_enabled=True).check_bind()
    with pytest.raises(ValueError, match="refusing to bind 0.0.0.0 with authentication off"):
        Settings(data_dir=tmp_path, host="0.0.0.0").check_bind()


def test_serve_refuses_public_bind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("EMBER_DATA_DIR", str(tmp_path / "data"))
    assert cli.main(["serve", "--host", "0.0.0.0"]) == 2
    assert "refusing to bind 0.0.0.0 with authentication off" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_settings_defaults(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, max_runtime_s=7200)
    assert settings.database_url == f"sqlite:///{tmp_path}/ember.sqlite"
    assert settings.broker_url == f"sqla+sqlite:///{tmp_path}/broker.sqlite"
    assert settings.broker_visibility_timeout_s == 7200 + 3600
    with pytest.raises(ValueError, match="job_lease_s"):
        Settings(data_dir=tmp_path, heartbeat_interval_s=10, job_lease_s=15)
    with pytest.raises(ValueError, match="unknown queue 'tpu'"):
        Settings(data_dir=tmp_path, ready_queues="cpu,tpu")


# --------------------------------------------------------------- sweeps


def test_sweep_paths() -> None:
    assert sweeps.parse_path("$.network.connections.exc.weight") == ["network", "connections", "exc", "weight"]
    assert sweeps.parse_path('network.populations["e cells"].tau_mem') == ["network", "populations", "e cells", "tau_mem"]
    assert sweeps.parse_path("record.phases[1]") == ["record", "phases", 1]
    with pytest.raises(sweeps.SweepPathError, match="is malformed at character"):
        sweeps.parse_path("network..x")
    document = {"a": {"b": [1, 2]}}
    assert sweeps.expand(document, {"a.b[1]": 5, "a.c": 1}) == {"a": {"b": [1, 5], "c": 1}}
    assert document == {"a": {"b": [1, 2]}}
    with pytest.raises(sweeps.SweepPathError, match="index 2 is past the end of a list of 2"):
        sweeps.expand(document, {"a.b[2]": 0})
    assert sweeps.combinations({"x": [1, 2], "y": [3, 4]}, "zip") == [{"x": 1, "y": 3}, {"x": 2, "y": 4}]
    assert len(sweeps.combinations({"x": [1, 2], "y": [3, 4, 5]}, "grid")) == 6
    with pytest.raises(sweeps.SweepPathError, match="lists of one length"):
        sweeps.combinations({"x": [1], "y": [3, 4]}, "zip")
