"""OpenAI's Responses API as Ollama serves it: POST /v1/responses, stateless (no
previous_response_id, nothing stored), streamed as `event:` / `data:` pairs or one JSON."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import msgspec
from aiohttp import web

from services.sim.chat import ChatRequest, plan_chat
from services.sim.engine import SimError
from services.sim.infer import Generation, generation, int_option
from services.sim.openai_api import think_from_effort
from services.sim.web import body_of, drain, engine_of, fault_pause, json_response, model_name

__all__ = ["ROUTES"]

# Ollama builds the stream's events as Go maps, which encode with sorted keys.
_sorted = msgspec.json.Encoder(order="sorted").encode


def _text(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    text = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            text.append(str(part.get("text", "")))
        elif kind == "input_file":
            raise SimError(400, "file inputs are not currently supported")
    return "".join(text)


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """instructions and input as Ollama's chat messages."""
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        messages.append({"role": "system", "content": body["instructions"]})
    raw = body.get("input")
    if isinstance(raw, str):
        if raw:
            messages.append({"role": "user", "content": raw})
        return messages
    if raw is not None and not isinstance(raw, list):
        raise SimError(400, "input must be a string or array")
    for index, item in enumerate(raw or []):
        if not isinstance(item, dict):
            raise SimError(400, f"input[{index}]: input item must be an object")
        kind = item.get("type") or ("message" if item.get("role") else "")
        if kind == "message":
            messages.append({"role": str(item.get("role", "user")),
                             "content": _text(item.get("content"), index)})
        elif kind == "function_call":
            try:
                arguments = json.loads(item.get("arguments") or "{}")
            except ValueError as exc:
                raise SimError(400, f"failed to parse function call arguments: {exc}") from None
            call = {"id": item.get("call_id", ""),
                    "function": {"name": item.get("name", ""), "arguments": arguments}}
            if messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "content": _text(output, index),
                             "tool_call_id": item.get("call_id", "")})
        elif kind in ("reasoning", "web_search_call"):
            continue  # history the model does not read again
        elif not kind:
            raise SimError(400, f"input[{index}]: input item missing required 'type' field")
        else:
            raise SimError(400, f"input[{index}]: unknown input item type: {json.dumps(kind)}")
    return messages


def _tools(raw: Any) -> list[dict[str, Any]]:
    """Responses tools (flat, maybe grouped in namespaces) as Ollama's function tools."""
    tools: list[dict[str, Any]] = []
    for tool in raw if isinstance(raw, list) else []:
        if not isinstance(tool, dict) or tool.get("type") == "web_search":
            continue  # the built-in search needs Ollama's cloud: not simulated
        if tool.get("type") == "namespace":
            prefix = f"{tool.get('name')}." if tool.get("name") else ""
            for member in _tools(tool.get("tools")):
                member["function"]["name"] = prefix + member["function"]["name"]
                tools.append(member)
            continue
        tools.append({"type": "function", "function": {
            "name": tool.get("name", ""), "description": tool.get("description") or "",
            "parameters": tool.get("parameters")}})
    return tools


def _format(body: dict[str, Any]) -> Any:
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return fmt.get("schema")
    return None


async def responses(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    body = body_of(request)
    asked = model_name(body, normalize=False)
    options: dict[str, Any] = {}
    limit = int_option(body, "max_output_tokens")
    if limit is not None:
        options["num_predict"] = limit
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    job = plan_chat(engine, ChatRequest(
        asked, _messages(body), tools=_tools(body.get("tools")), format=_format(body),
        think=think_from_effort(effort), options=options), request.get("slow", 1.0))
    rng = random.Random()
    ids = {"response": f"resp_{rng.randint(0, 999_999)}", "item": f"msg_{rng.randint(0, 999_999)}"}
    async with generation(engine, job) as gen:
        if body.get("stream") is True:
            return await _stream(request, gen, body, asked, ids)
        await drain(request, gen)
        return json_response(_response(body, asked, ids["response"], "completed",
                                       output=_output(gen, ids), usage=_usage(gen),
                                       completed=time.time()))


def _usage(gen: Generation) -> dict[str, Any]:
    prompt, output = len(gen.prompt_tokens), gen.eval_count
    return {"input_tokens": prompt, "output_tokens": output, "total_tokens": prompt + output,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}}


def _message(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [],
                         "logprobs": []}]}


def _reasoning(item_id: str, thought: str) -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning",
            "summary": [{"type": "summary_text", "text": thought}],
            "encrypted_content": thought}


def _calls(gen: Generation, response_id: str) -> list[dict[str, Any]]:
    return [{"id": f"fc_{response_id}_{i}", "type": "function_call", "status": "completed",
             "call_id": c.id, "name": c.name, "arguments": json.dumps(c.arguments)}
            for i, c in enumerate(gen.tool_calls)]


def _output(gen: Generation, ids: dict[str, str]) -> list[dict[str, Any]]:
    output = []
    if gen.thought:
        output.append(_reasoning(f"rs_{ids['response']}", "".join(gen.thought)))
    if gen.tool_calls:
        return output + _calls(gen, ids["response"])
    return [*output, _message(ids["item"], "".join(gen.output))]


def _response(body: dict[str, Any], model: str, response_id: str, status: str, *,
              output: list[Any], usage: dict[str, Any] | None, completed: float | None,
              ) -> dict[str, Any]:
    """The response object, echoing the request's settings as Ollama does."""
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    reasoning = body.get("reasoning")
    echoed = None
    if isinstance(reasoning, dict) and (reasoning.get("effort") or reasoning.get("summary")):
        echoed = {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
    return {
        "id": response_id, "object": "response", "created_at": int(time.time()),
        "completed_at": int(completed) if completed else None, "status": status,
        "incomplete_details": None, "model": model, "previous_response_id": None,
        "instructions": body.get("instructions") or None, "output": output, "error": None,
        "tools": body.get("tools") or [], "tool_choice": "auto",
        "truncation": body.get("truncation") or "disabled", "parallel_tool_calls": True,
        "text": {"format": fmt if isinstance(fmt, dict) else {"type": "text"}},
        "top_p": _number(body.get("top_p")), "presence_penalty": 0, "frequency_penalty": 0,
        "top_logprobs": 0, "temperature": _number(body.get("temperature")), "reasoning": echoed,
        "usage": usage, "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None, "store": False, "background": bool(body.get("background")),
        "service_tier": "default", "metadata": {}, "safety_identifier": None,
        "prompt_cache_key": None,
    }


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 1.0


class _Events:
    """Numbers the events of one stream, as Ollama's converter does."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.sequence = 0

    async def send(self, kind: str, data: dict[str, Any]) -> None:
        data["type"] = kind
        data["sequence_number"] = self.sequence
        self.sequence += 1
        await self.response.write(b"event: " + kind.encode() + b"\ndata: " + _sorted(data)
                                  + b"\n\n")


async def _stream(request: web.Request, gen: Generation, body: dict[str, Any], model: str,
                  ids: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)
    events = _Events(response)
    rid, item = ids["response"], ids["item"]
    for kind in ("response.created", "response.in_progress"):
        await events.send(kind, {"response": _response(
            body, model, rid, "in_progress", output=[], usage=None, completed=None)})
    done: list[dict[str, Any]] = []
    index = 0
    count = 0
    thought = ""
    reasoning_id = f"rs_{random.randint(0, 999_999)}"
    async for token in gen.thinking():
        await fault_pause(request, count)
        if not thought:
            await events.send("response.output_item.added", {"output_index": index, "item": {
                "id": reasoning_id, "type": "reasoning", "summary": []}})
        thought += token
        await events.send("response.reasoning_summary_text.delta", {
            "item_id": reasoning_id, "output_index": index, "summary_index": 0,
            "delta": token})
        count += 1
    text = ""
    async for token in gen.tokens():
        await fault_pause(request, count)
        if thought and not done:
            index = await _finish_reasoning(events, done, reasoning_id, index, thought)
        if not text:
            await events.send("response.output_item.added", {
                "output_index": index, "item": {**_message(item, "", "in_progress"),
                                                "content": []}})
            await events.send("response.content_part.added", {
                "item_id": item, "output_index": index, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})
        text += token
        await events.send("response.output_text.delta", {
            "item_id": item, "output_index": index, "content_index": 0, "delta": token,
            "logprobs": []})
        count += 1
    await fault_pause(request, count, final=True)
    if thought and not done:
        index = await _finish_reasoning(events, done, reasoning_id, index, thought)
    for i, call in enumerate(_calls(gen, rid)):
        call["id"] = f"fc_{random.randint(0, 999_999)}_{i}"
        pending = {**call, "status": "in_progress", "arguments": ""}
        await events.send("response.output_item.added", {"output_index": index, "item": pending})
        await events.send("response.function_call_arguments.delta", {
            "item_id": call["id"], "output_index": index, "delta": call["arguments"]})
        await events.send("response.function_call_arguments.done", {
            "item_id": call["id"], "output_index": index, "arguments": call["arguments"]})
        await events.send("response.output_item.done", {"output_index": index, "item": call})
        done.append(call)
        index += 1
    if text:
        await events.send("response.output_text.done", {
            "item_id": item, "output_index": index, "content_index": 0, "text": text,
            "logprobs": []})
        await events.send("response.content_part.done", {
            "item_id": item, "output_index": index, "content_index": 0,
            "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []}})
        await events.send("response.output_item.done", {"output_index": index,
                                                        "item": _message(item, text)})
        done.append(_message(item, text))
    await events.send("response.completed", {"response": _response(
        body, model, rid, "completed", output=done, usage=_usage(gen), completed=time.time())})
    await response.write_eof()
    return response


async def _finish_reasoning(events: _Events, done: list[dict[str, Any]], item_id: str,
                            index: int, thought: str) -> int:
    item = _reasoning(item_id, thought)
    await events.send("response.reasoning_summary_text.done", {
        "item_id": item_id, "output_index": index, "summary_index": 0, "text": thought})
    await events.send("response.output_item.done", {"output_index": index, "item": item})
    done.append(item)
    return index + 1


ROUTES = [web.post("/v1/responses", responses)]
