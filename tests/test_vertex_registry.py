"""Per-epoch checkpoints of a tuning job and the Model Registry alias `champion`: the Vertex backend through
the real google-genai / aiplatform clients against the Vertex-shaped server, which refuses what Vertex refuses."""

from __future__ import annotations

import dataclasses
import time
import urllib.parse

import google.api_core.exceptions as gexc
import pytest

from sftflow.backends import make_generator, make_tuner
from sftflow.backends.base import GenerationParams, TuningSpec
from sftflow.errors import BackendError
from tests.servers.vertex_fixtures import TEST_TOKEN

PROMPT = "Summarize the following article:\n\nFirst, rinse the pot. Then dry it well. Tip: enjoy."


def _succeeded(tuner, name, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not (status := tuner.get(name)).state.ended:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return status


def _spec(datasets, epochs: int) -> TuningSpec:
    return TuningSpec(base_model="gemini-2.5-flash", train_uri=datasets["train"], val_uri=datasets["val"],
                      epochs=epochs, adapter_size=4, learning_rate_multiplier=1.0, display_name="d",
                      key=f"kckpt{epochs}")


def test_multi_epoch_jobs_expose_one_servable_checkpoint_per_epoch(make_vertex_server, vertex_settings_for,
                                                                  tuning_datasets):
    server = make_vertex_server(job_phases=(0.2, 0.4), require_token=TEST_TOKEN)
    settings = vertex_settings_for(server)
    tuner = make_tuner(settings)
    name = tuner.submit(_spec(tuning_datasets, 3))
    assert tuner.get(name).checkpoints == []  # none before the job succeeds
    status = _succeeded(tuner, name)
    assert [(c["checkpoint_id"], c["epoch"]) for c in status.checkpoints] == [("1", 1), ("2", 2), ("3", 3)]
    assert [c["step"] for c in status.checkpoints] == sorted(c["step"] for c in status.checkpoints)
    assert status.checkpoints[-1]["endpoint"] == status.endpoint  # the last one is the default the job serves
    for c in status.checkpoints[:-1]:
        answer = make_generator(settings, c["endpoint"]).generate(PROMPT, GenerationParams(timeout_s=5))
        assert answer.text
    one = _succeeded(tuner, tuner.submit(_spec(tuning_datasets, 1)))
    assert one.checkpoints == []  # a one-epoch job keeps no intermediate checkpoint


def test_mark_champion_merges_the_alias_and_the_server_refuses_what_vertex_refuses(make_vertex_server,
                                                                                  vertex_settings_for,
                                                                                  tuning_datasets):
    server = make_vertex_server(job_phases=(0.2, 0.3), require_token=TEST_TOKEN)
    tuner = make_tuner(vertex_settings_for(server))
    status = _succeeded(tuner, tuner.submit(_spec(tuning_datasets, 1)))
    assert tuner.mark_champion(status) == f"{status.tuned_model.split('@')[0]}@champion"
    models = tuner._gapic("ModelServiceClient")
    assert list(models.get_model(name=status.tuned_model).version_aliases) == ["default", "champion"]
    call = [r for r in server.requests if r["path"].endswith(":mergeVersionAliases")]
    assert call[0]["body"]["versionAliases"] == ["champion"] and call[0]["status"] == 200

    bare = status.tuned_model.split("@")[0]
    for name, aliases, message in [
        (bare, ["champion"], "must include a version ID"),
        (status.tuned_model, [], "version_aliases must not be empty"),
        (status.tuned_model, ["default"], "'default' is reserved"),
        (status.tuned_model, ["Champion"], "does not match"),
        (status.tuned_model, ["has space"], "does not match"),
    ]:
        with pytest.raises(gexc.BadRequest, match=message):
            models.merge_version_aliases(name=name, version_aliases=aliases)
    with pytest.raises(gexc.NotFound):
        models.merge_version_aliases(name=f"{bare}9@1", version_aliases=["champion"])
    models.merge_version_aliases(name=status.tuned_model, version_aliases=["-champion"])  # "-x" removes x
    assert list(models.get_model(name=status.tuned_model).version_aliases) == ["default"]


def test_mark_champion_of_a_deleted_model_is_a_backend_error(make_vertex_server, vertex_settings_for,
                                                            tuning_datasets):
    server = make_vertex_server(job_phases=(0.2, 0.3), require_token=TEST_TOKEN)
    tuner = make_tuner(vertex_settings_for(server))
    status = _succeeded(tuner, tuner.submit(_spec(tuning_datasets, 1)))
    tuner.delete_outputs(status, dry_run=False)
    with pytest.raises(BackendError, match="setting alias champion"):
        tuner.mark_champion(status)


def test_a_new_champion_takes_the_alias_off_the_one_it_replaces(make_vertex_server, vertex_settings_for,
                                                               tuning_datasets, caplog):
    server = make_vertex_server(job_phases=(0.2, 0.3), require_token=TEST_TOKEN)
    tuner = make_tuner(vertex_settings_for(server))
    first = _succeeded(tuner, tuner.submit(_spec(tuning_datasets, 1)))
    second = _succeeded(tuner, tuner.submit(dataclasses.replace(_spec(tuning_datasets, 1), key="knext")))
    models = tuner._gapic("ModelServiceClient")

    def aliases(status):
        return list(models.get_model(name=status.tuned_model).version_aliases)

    tuner.mark_champion(first)
    tuner.mark_champion(second, previous=first)
    assert aliases(first) == ["default"] and aliases(second) == ["default", "champion"]
    tuner.mark_champion(second, previous=first)  # a rerun after a crash: the same state, no error
    assert aliases(first) == ["default"] and aliases(second) == ["default", "champion"]

    tuner.delete_outputs(first, dry_run=False)  # the replaced champion's model was deleted: nothing to take off
    tuner.mark_champion(second, previous=first)
    assert "no longer exists: no alias to remove" in caplog.text and aliases(second) == ["default", "champion"]


def test_cleanup_deletes_checkpoint_endpoints_before_the_model(make_vertex_server, vertex_settings_for,
                                                               tuning_datasets):
    server = make_vertex_server(job_phases=(0.2, 0.3), require_token=TEST_TOKEN)
    tuner = make_tuner(vertex_settings_for(server))
    status = _succeeded(tuner, tuner.submit(_spec(tuning_datasets, 2)))
    first = status.checkpoints[0]["endpoint"]
    listed = tuner.delete_outputs(status, dry_run=True)
    assert listed == [first, status.endpoint, status.tuned_model.split("@")[0]]
    assert tuner.delete_outputs(status, dry_run=False) == listed
    assert server.count("DELETE", f"/v1/{first}") == 1
    assert tuner.delete_outputs(status, dry_run=True) == []  # all gone; a second run is harmless


def test_a_checkpoint_champion_becomes_the_default_checkpoint(make_vertex_server, vertex_settings_for,
                                                              tuning_datasets):
    """aiplatform `update_model` with a FieldMask (PATCH models/ID@1?updateMask=defaultCheckpointId; the API description
    calls the mask "Required.", google-genai 2.34's `models.update` sends none): the job's endpoint then names the
    checkpoint's; the server refuses a checkpoint the model does not have, as Vertex does."""
    server = make_vertex_server(job_phases=(0.2, 0.3), require_token=TEST_TOKEN)
    tuner = make_tuner(vertex_settings_for(server))
    status = _succeeded(tuner, tuner.submit(_spec(tuning_datasets, 2)))
    first = status.checkpoints[0]
    assert tuner.mark_champion(status, checkpoint_id=first["checkpoint_id"]).endswith("@champion")
    patch = [r for r in server.requests if r["method"] == "PATCH"]
    assert [r["body"] for r in patch] == [{"defaultCheckpointId": "1"}] and patch[0]["status"] == 200
    assert "updateMask=defaultCheckpointId" in urllib.parse.unquote(patch[0]["query"])
    model = tuner._gapic("ModelServiceClient").get_model(name=status.tuned_model)
    assert model.default_checkpoint_id == "1" and list(model.version_aliases) == ["default", "champion"]
    assert tuner.get(status.name).endpoint == first["endpoint"] != status.endpoint  # the default's endpoint

    with pytest.raises(BackendError, match=r"making checkpoint 9 the default") as err:
        tuner.mark_champion(status, checkpoint_id="9")
    assert getattr(err.value.__cause__, "code", None) == 400
    one = _succeeded(tuner, tuner.submit(_spec(tuning_datasets, 1)))
    with pytest.raises(BackendError) as err:
        tuner.mark_champion(one, checkpoint_id="1")  # no intermediate checkpoints: nothing to choose
    assert getattr(err.value.__cause__, "code", None) == 400
