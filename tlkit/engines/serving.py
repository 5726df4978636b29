"""``tlkit serve`` on LitServe: the request and response forms (`parse_request`), the LitAPI that answers them with a
`ServedModel` (dynamic batching across requests, bad requests answered alone), and the server (`build_server`).

A request is JSON or a multipart form. JSON: ``{"image": "<base64 file>"}`` or ``{"images": [...]}`` (``text`` /
``texts`` for a text model; ``clip`` / ``clips``, base64 sound files, for an audio model). A form: one or more
files in the field ``file`` (a text model: ``text`` fields). One input is answered with its record, a list with
``{"predictions": [records]}``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import litserve
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData, UploadFile

from tlkit.engines.served_models import InputKind, RequestError, Sample, ServedModel, load_served_model

#: Each input kind's JSON fields: one input, and a list of them.
FIELDS: dict[InputKind, tuple[str, str]] = {
    "images": ("image", "images"),
    "texts": ("text", "texts"),
    "clips": ("clip", "clips"),
}
#: The multipart form field for files (images, clips); texts come in their own fields (`FIELDS`).
FILE_FIELD = "file"


@dataclass(frozen=True)
class ParsedRequest:
    """A request's decoded samples, and whether it sent a list (answered with a list)."""

    samples: list[Sample]
    many: bool


def _describe_fields(kind: InputKind) -> str:
    one, many = FIELDS[kind]
    what = {"images": "a base64-encoded image file", "texts": "a string", "clips": "a base64-encoded sound file"}
    files = f", or a multipart form with files in {FILE_FIELD!r}" if kind != "texts" else ""
    return f"a JSON object with {one!r} ({what[kind]}) or {many!r} (a list of them){files}"


def parse_request(request: Any, model: ServedModel, max_items: int) -> ParsedRequest:
    """The samples a request holds (JSON or a form, see the module's docstring), decoded by ``model``; a
    `RequestError` naming the field otherwise."""
    kind = model.kind
    one, many = FIELDS[kind]
    if not isinstance(request, Mapping):
        raise RequestError(f"Expected {_describe_fields(kind)}, but got {type(request).__name__}.", 422)
    keys = set(request.keys())
    # A form (Starlette's FormData) repeats a field per file; its files are uploads, its texts strings.
    form = request.multi_items() if isinstance(request, FormData) else []
    uploads = [value for key, value in form if key in (FILE_FIELD, one, many) and isinstance(value, UploadFile)]
    if uploads:
        inputs = [(f"{FILE_FIELD}[{i}]", value.file.read()) for i, value in enumerate(uploads)]
        is_list = len(inputs) > 1
    elif form and kind == "texts":
        texts = [value for key, value in form if key in (one, many)]
        inputs, is_list = [(f"{one}[{i}]", value) for i, value in enumerate(texts)], len(texts) > 1
        if not texts:
            raise RequestError(f"Expected {_describe_fields(kind)}, but got the form fields {sorted(keys)}.", 422)
    elif one in keys and many not in keys:
        inputs, is_list = [(one, request[one])], False
    elif many in keys and one not in keys:
        values = request[many]
        if not isinstance(values, list) or not values:
            got = "an empty list" if isinstance(values, list) else type(values).__name__
            raise RequestError(f"Expected {many!r} to be a non-empty list, but got {got}.", 422)
        inputs, is_list = [(f"{many}[{i}]", value) for i, value in enumerate(values)], True
    else:
        got = f"the fields {sorted(keys)}" if keys else "no fields"
        raise RequestError(f"Expected {_describe_fields(kind)}, but got {got}.", 422)
    if len(inputs) > max_items:
        raise RequestError(f"Expected at most {max_items} inputs per request, but got {len(inputs)}.", 413)
    return ParsedRequest([model.decode(_payload(value, field, kind), field) for field, value in inputs], is_list)


def _payload(value: Any, field: str, kind: InputKind) -> bytes | str:
    """A JSON field's value as the model decodes it: a text as it is, a file from its base64."""
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        expected = "a string" if kind == "texts" else "a base64-encoded file (a string)"
        raise RequestError(f"Expected {field!r} to be {expected}, but got {type(value).__name__}.", 422)
    if kind == "texts":
        return value
    if value.startswith("data:") and "," in value:  # a data URL, as browsers write one
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"Expected {field!r} to be a base64-encoded file, but it is not valid base64.") from None


def rejection(error: RequestError) -> JSONResponse:
    """A bad request's answer: its status and one line, in FastAPI's error form (``{"detail": ...}``)."""
    return JSONResponse({"detail": str(error)}, status_code=error.status)


class ServingAPI(litserve.LitAPI):
    """The LitAPI of ``tlkit serve``: each worker loads the model once (`setup`), decodes each request on its own,
    predicts every valid request of a dynamic batch in one forward pass, and answers a bad request with its 4xx
    while the others of its batch get their predictions.

    Args:
        ckpt_path: a tlkit checkpoint, or None.
        model_dir: a `tlkit export` folder, or None.
        top_k: how many classes a classifier's answer lists.
        max_items: inputs one request may hold.
        max_batch_size: requests LitServe gathers into one batch (1: no batching).
        batch_timeout: seconds LitServe waits to fill a batch.
    """

    def __init__(
        self,
        ckpt_path: str | None = None,
        model_dir: str | None = None,
        top_k: int = 3,
        max_items: int = 64,
        max_batch_size: int = 1,
        batch_timeout: float = 0.0,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.ckpt_path, self.model_dir, self.top_k, self.max_items = ckpt_path, model_dir, top_k, max_items

    def setup(self, device: str) -> None:
        self.model = load_served_model(self.ckpt_path, self.model_dir, device, self.top_k)

    def decode_request(self, request) -> ParsedRequest | RequestError:  # untyped: LitServe reads a type as a schema
        try:
            return parse_request(request, self.model, self.max_items)
        except RequestError as error:
            return error  # answered by `encode_response`, so that it fails alone in a batch

    def predict(self, x: Any) -> Any:
        batched = self.max_batch_size > 1
        requests = x if batched else [x]
        valid = [request for request in requests if isinstance(request, ParsedRequest)]
        records = iter(self.model.predict([s for request in valid for s in request.samples]) if valid else [])
        answers: list[Any] = []
        for request in requests:
            if isinstance(request, RequestError):
                answers.append(request)
                continue
            mine = [next(records) for _ in request.samples]
            answers.append({"predictions": mine} if request.many else mine[0])
        return answers if batched else answers[0]

    def encode_response(self, output: Any) -> Any:
        return rejection(output) if isinstance(output, RequestError) else output


#: A body over the limit is read to its end (so that an ordinary client, which sends all before it reads, gets the
#: 413) when it is at most this many times the limit; a larger one is answered at that point.
DRAINED_BODY_FACTOR = 4


class RequestBodyCheck:
    """ASGI middleware for the predict route: a body over ``max_bytes`` gets 413, and a body that is neither a form
    nor JSON gets 400, each with one line, before the request reaches LitServe (whose JSON parsing would answer 500
    and log a traceback)."""

    def __init__(self, app: Any, path: str, max_bytes: int) -> None:
        self.app, self.path, self.max_bytes = app, path, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size <= self.max_bytes:
                chunks.append(chunk)
            elif not more or size > DRAINED_BODY_FACTOR * self.max_bytes:
                # Read (and drop) a somewhat larger body to its end, so that its client reads the answer.
                megabytes = self.max_bytes / 2**20
                detail = f"Expected a request of at most {megabytes:g} MB (--max_request_mb), but it is larger."
                await _reply(send, 413, detail)
                return
        body = b"".join(chunks)
        content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
        if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            try:
                json.loads(body)
            except ValueError as err:
                await _reply(
                    send, 400, f"Expected the request body to be JSON or a multipart form, but it is neither ({err})."
                )
                return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _reply(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def build_server(model: ServedModel, options: Any) -> litserve.LitServer:
    """The LitServer for ``options`` (the command's: paths, batching, devices, limits); ``model`` (loaded once by
    the command, so that a model that cannot load stops it before any worker starts) is described at ``/info``."""
    api = ServingAPI(
        options.ckpt_path,
        options.model_dir,
        top_k=options.top_k,
        max_items=options.max_items,
        max_batch_size=options.max_batch_size,
        batch_timeout=options.batch_timeout,
    )
    return litserve.LitServer(
        api,
        accelerator=options.accelerator,
        devices=options.devices,
        workers_per_device=options.workers_per_device,
        timeout=options.timeout,
        middlewares=[(RequestBodyCheck, {"path": api.api_path, "max_bytes": int(options.max_request_mb * 2**20)})],
        model_metadata=model.describe(),
    )


def serve(model: ServedModel, options: Any) -> None:
    """Run the server until it is stopped (Ctrl+C, SIGTERM)."""
    server = build_server(model, options)
    base = f"http://{options.host}:{options.port}"
    print(f"tlkit serve: {model.describe()['task']} on {model.kind}: POST {base}/predict (API page: {base}/docs)")
    server.run(host=options.host, port=options.port, generate_client_file=False, log_level="warning", num_api_servers=1)
