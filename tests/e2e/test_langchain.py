"""LangChain through the router, as its users write it: `ChatOllama` and `ChatOpenAI`
pointed at Herd, with structured output (a JSON schema the node must follow) and tools
(the node must call one), whole and streamed. Each answer must reach LangChain's own
parsers intact: a schema that does not validate or a tool call that is lost in the relay
fails here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core.messages import AIMessageChunk
from langchain_core.tools import tool
from langchain_ollama import ChatOllama, OllamaEmbeddings
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.e2e.proxy_fleet import Fleet, start_fleet

pytestmark = pytest.mark.e2e

MODEL = "llama3.2:3b"
EMBEDDER = "nomic-embed-text"


class City(BaseModel):
    name: str
    population: int


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Fleet]:
    flags = ["--models", f"{MODEL},{EMBEDDER}", "--tokens-per-s", "400"]
    with start_fleet(tmp_path_factory.mktemp("langchain"), redis_url,
                     {"n0": flags, "n1": flags}) as running:
        yield running


def test_chat_ollama_structured_output_tools_and_stream(fleet: Fleet) -> None:
    llm = ChatOllama(base_url=fleet.url, model=MODEL)
    city = llm.with_structured_output(City, method="json_schema").invoke("Name a city.")
    assert isinstance(city, City) and city.name and city.population >= 0

    called = llm.bind_tools([get_weather]).invoke("What is the weather in Paris?")
    assert [c["name"] for c in called.tool_calls] == ["get_weather"]
    assert isinstance(called.tool_calls[0]["args"].get("city"), str)

    chunks = list(llm.stream("Say hello."))
    assert len(chunks) > 2 and all(isinstance(c, AIMessageChunk) for c in chunks)
    whole = sum(chunks[1:], chunks[0])
    assert isinstance(whole.content, str) and whole.content.strip()
    assert whole.usage_metadata is not None and whole.usage_metadata["output_tokens"] > 0


def test_chat_openai_structured_output_and_tools(fleet: Fleet) -> None:
    llm = ChatOpenAI(base_url=f"{fleet.url}/v1", api_key="unused", model=MODEL,
                     max_retries=0)
    city = llm.with_structured_output(City).invoke("Name a city.")
    assert isinstance(city, City) and city.name

    called = llm.bind_tools([get_weather]).invoke("What is the weather in Paris?")
    assert [c["name"] for c in called.tool_calls] == ["get_weather"]

    text = "".join(str(c.content) for c in llm.stream("Say hello."))
    assert text.strip()


def test_ollama_embeddings(fleet: Fleet) -> None:
    embedder = OllamaEmbeddings(base_url=fleet.url, model=EMBEDDER)
    vectors = embedder.embed_documents(["one", "two"])
    assert len(vectors) == 2 and len(vectors[0]) > 8 and vectors[0] != vectors[1]
