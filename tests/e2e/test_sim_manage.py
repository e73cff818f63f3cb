"""`herd sim` manages models as the `ollama` CLI drives it (create from blobs or a model,
copy, delete, push), transcribes and speaks, and an old --ollama-version answers the
paths it did not have yet as Ollama's router does."""

from __future__ import annotations

import hashlib
import io
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from services.sim.audio_api import TRANSCRIPT
from tests.simproc import SimProc, sim_stats, start_sim

pytestmark = pytest.mark.e2e

MODEL = "llama3.2:3b"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProc]:
    proc = start_sim(tmp_path_factory.mktemp("sim-manage"), "manage", tokens_per_s=0,
                     models="llama3.2:3b,nomic-embed-text")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProc]:
    proc = start_sim(tmp_path_factory.mktemp("sim-old"), "old", tokens_per_s=0,
                     models="llama3.2:3b", ollama_version="0.13.2")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(sim: SimProc) -> ollama.Client:
    return ollama.Client(host=sim.url)


def _names(client: ollama.Client) -> dict[str, ollama.ListResponse.Model]:
    return {m.model or "": m for m in client.list().models}


def test_copy_serves_and_delete_removes(client: ollama.Client) -> None:
    assert client.copy(MODEL, "mine:copy").status == "success"
    listed = _names(client)
    assert listed["mine:copy"].digest == listed[MODEL].digest  # one manifest, two names
    reply = client.chat(model="mine:copy", messages=[{"role": "user", "content": "a"}],
                        options={"num_predict": 3})
    assert reply.eval_count == 3
    assert client.delete("mine:copy").status == "success"
    assert "mine:copy" not in _names(client)
    with pytest.raises(ollama.ResponseError) as gone:
        client.delete("mine:copy")
    assert gone.value.status_code == 404 and gone.value.error == "model 'mine:copy' not found"
    with pytest.raises(ollama.ResponseError) as missing:
        client.copy("nope", "other")
    assert missing.value.status_code == 404 and missing.value.error == 'model "nope" not found'


def test_create_from_an_uploaded_gguf_blob(client: ollama.Client, sim: SimProc,
                                           tmp_path: Path) -> None:
    weights = tmp_path / "tiny.gguf"
    weights.write_bytes(b"GGUF" + bytes(range(256)) * 40)
    digest = client.create_blob(weights)
    assert httpx.head(f"{sim.url}/api/blobs/{digest}").status_code == 200
    progress = list(client.create(model="tiny:1b", files={"tiny.gguf": digest}, stream=True))
    assert [p.status for p in progress] == [
        "parsing GGUF", f"using existing layer {digest}", "writing manifest", "success"]
    created = _names(client)["tiny:1b"]
    assert created.size == weights.stat().st_size
    reply = client.chat(model="tiny:1b", messages=[{"role": "user", "content": "hi"}],
                        options={"num_predict": 4})
    assert reply.eval_count == 4
    assert client.delete("tiny:1b").status == "success"


def test_create_from_a_model_keeps_its_system_prompt(client: ollama.Client,
                                                     sim: SimProc) -> None:
    done = client.create(model="helper", from_=MODEL, system="You are a careful helper.")
    assert done.status == "success"
    shown = httpx.post(sim.url + "/api/show", json={"model": "helper"}).json()
    assert shown["system"] == "You are a careful helper."
    assert 'SYSTEM """You are a careful helper."""' in (client.show("helper").modelfile or "")
    ask = [{"role": "user", "content": "hello"}]
    base = client.chat(model=MODEL, messages=ask, options={"num_predict": 1})
    helper = client.chat(model="helper", messages=ask, options={"num_predict": 1})
    assert (helper.prompt_eval_count or 0) > (base.prompt_eval_count or 0)
    statuses = [p.status for p in client.create(model="pulled", from_="smollm2:135m",
                                                stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert {"helper:latest", "pulled:latest", "smollm2:135m"} <= set(_names(client))


def test_blob_uploads_are_checked(sim: SimProc, client: ollama.Client) -> None:
    data = b"GGUF not really"
    good = "sha256:" + hashlib.sha256(data).hexdigest()
    wrong = "sha256:" + "0" * 64
    bad = httpx.post(f"{sim.url}/api/blobs/{wrong}", content=data)
    assert bad.status_code == 400 and bad.json() == {
        "error": f'digest mismatch, expected "{wrong}", got "{good}"'}
    assert httpx.head(f"{sim.url}/api/blobs/{wrong}").status_code == 404
    invalid = httpx.post(f"{sim.url}/api/blobs/sha256:xyz", content=data)
    assert invalid.status_code == 400 and invalid.json() == {"error": "invalid digest format"}
    assert httpx.post(f"{sim.url}/api/blobs/{good}", content=data).status_code == 201
    assert httpx.post(f"{sim.url}/api/blobs/{good}", content=data).status_code == 200
    text = b"plain text"
    plain = "sha256:" + hashlib.sha256(text).hexdigest()
    httpx.post(f"{sim.url}/api/blobs/{plain}", content=text).raise_for_status()
    with pytest.raises(ollama.ResponseError, match="supplied file was not in GGUF format"):
        client.create(model="broken", files={"w.gguf": plain})
    with pytest.raises(ollama.ResponseError, match="no such file or directory"):
        client.create(model="broken", files={"w.gguf": wrong})
    neither = httpx.post(f"{sim.url}/api/create", json={"model": "broken"})
    assert neither.status_code == 400
    assert neither.json() == {"error": "neither 'from' or 'files' was specified"}
    assert "broken:latest" not in _names(client)


def test_push_streams_progress(client: ollama.Client) -> None:
    progress = list(client.push(MODEL, stream=True))
    statuses = [p.status for p in progress]
    assert statuses[0] == "retrieving manifest" and statuses[-2:] == ["pushing manifest",
                                                                      "success"]
    layers = [p for p in progress if p.digest]
    assert layers and all(p.status == f"pushing {(p.digest or '')[7:19]}" for p in layers)
    assert layers[-1].completed == layers[-1].total
    assert client.push(MODEL).status == "success"
    with pytest.raises(ollama.ResponseError, match="no such file or directory"):
        client.push("nobody/nothing:1b")


def test_transcriptions_in_ollamas_formats(sim: SimProc) -> None:
    oai = openai.OpenAI(base_url=sim.url + "/v1", api_key="unused", max_retries=0)
    audio = ("speech.wav", b"RIFF....WAVE fake audio")
    result = oai.audio.transcriptions.create(model=MODEL, file=audio)
    assert result.text == TRANSCRIPT
    text = oai.audio.transcriptions.create(model=MODEL, file=audio, response_format="text")
    assert text.strip() == TRANSCRIPT
    verbose = httpx.post(sim.url + "/v1/audio/transcriptions", files={"file": audio},
                         data={"model": MODEL, "response_format": "verbose_json"})
    assert verbose.json() == {"text": TRANSCRIPT}  # Ollama answers only the text
    last = sim_stats(sim.url)["last_requests"][-1]
    assert last["body"]["model"] == MODEL and last["body"]["file"]["bytes"] == len(audio[1])
    with pytest.raises(openai.NotFoundError):
        oai.audio.transcriptions.create(model="nope", file=audio)
    empty = httpx.post(sim.url + "/v1/audio/transcriptions", files={"file": ("a.wav", b"")},
                       data={"model": MODEL})
    assert empty.status_code == 400 and empty.json()["error"]["message"] == "audio file is empty"
    not_form = httpx.post(sim.url + "/v1/audio/transcriptions", json={"model": MODEL})
    assert not_form.status_code == 400


def test_speech_is_a_streamed_wav(sim: SimProc) -> None:
    oai = openai.OpenAI(base_url=sim.url + "/v1", api_key="unused", max_retries=0)
    spoken = oai.audio.speech.create(model=MODEL, voice="alloy", input="Hello there, world.",
                                     response_format="wav")
    assert spoken.response.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(spoken.read())) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 24000)
        assert 0.2 < wav.getnframes() / 24000 < 2.0
    with pytest.raises(openai.NotFoundError):
        oai.audio.speech.create(model="nope", voice="alloy", input="a")


def test_an_old_version_lacks_the_new_paths(old: SimProc) -> None:
    assert httpx.get(old.url + "/api/version").json() == {"version": "0.13.2"}
    for path in ("/v1/responses", "/v1/messages", "/v1/audio/transcriptions",
                 "/v1/audio/speech"):
        response = httpx.post(old.url + path, json={"model": MODEL, "input": "a"})
        assert response.status_code == 404, path
        assert response.text == "404 page not found"
        assert response.headers["content-type"] == "text/plain"
    model_miss = httpx.post(old.url + "/v1/chat/completions", json={
        "model": "nope", "messages": [{"role": "user", "content": "a"}]})
    assert model_miss.status_code == 404 and model_miss.json()["error"]["type"] == (
        "not_found_error")
    wrong_method = httpx.get(old.url + "/api/chat")
    assert wrong_method.status_code == 405 and wrong_method.text == "405 method not allowed"
    claude_path = httpx.post(old.url + "/v1/messages/count_tokens", json={})
    assert claude_path.status_code == 404 and claude_path.text == "404 page not found"
