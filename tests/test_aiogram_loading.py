"""aiogram imported with its models built on first use (:mod:`tgbroadcast.worker.aiogram_loading`),
and a worker's own built as it starts (:mod:`tgbroadcast.worker.aiogram_models`).

Each check runs in a new interpreter: the test process imported aiogram as usual long ago."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

_LAZY = (
    "from tgbroadcast.worker.aiogram_loading import import_aiogram\n"
    "assert import_aiogram()\n"
    "assert not import_aiogram()  # imported now: nothing to do\n"
    "from aiogram.types import Message\n"
    "assert not Message.__pydantic_complete__  # deferred: built below at its first use\n"
)

_SCHEMAS = """
import hashlib, json, warnings
from aiogram import methods, types
from aiogram.methods.base import Response
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

class Schemas(GenerateJsonSchema):
    def handle_invalid_for_json_schema(self, schema, error_info):
        return {"not in JSON schema": error_info}

answers = [
    Response[types.Message], Response[list[types.Message]], Response[types.MessageId],
    Response[bool], Response[types.Message | bool],
]
sent = [
    value for name in sorted(methods.__all__)
    if isinstance(value := getattr(methods, name), type) and issubclass(value, BaseModel)
]
models = [types.Update, *answers, *sent]
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # aiogram's Default(...) values: not JSON
    schemas = [
        json.dumps(m.model_json_schema(schema_generator=Schemas, mode=mode), sort_keys=True)
        for m, mode in [*((m, "validation") for m in models), *((m, "serialization") for m in sent)]
    ]
print(json.dumps({"models": len(models), "digest": hashlib.sha256(
    "\\n".join(schemas).encode()).hexdigest()}))
"""


def _started(script: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _output(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return out


def test_every_model_is_the_one_an_eager_import_builds() -> None:
    """The JSON schema of every method (and so of every type a method takes), as validated and
    as sent, of ``Update`` (every type Telegram sends) and of the worker's answers: the same
    whether aiogram built them at import or each at its first use."""
    eager, lazy = _started(_SCHEMAS), _started(_LAZY + _SCHEMAS)
    built_at_import, built_on_use = json.loads(_output(eager)), json.loads(_output(lazy))
    assert built_at_import["models"] > 150
    assert built_on_use == built_at_import


def test_models_are_built_on_first_use_and_a_workers_as_it_starts() -> None:
    script = _LAZY + textwrap.dedent(
        """
        import sys
        from aiogram.methods import SendMessage
        from aiogram.methods.base import Response
        from aiogram.types import Dice, Message, Poll
        from pydantic import BaseModel
        assert not Message.__pydantic_complete__ and not Dice.__pydantic_complete__

        # A refusal parsed as aiogram's session parses it (the answer's model built).
        answer = Response[Message].model_validate(
            {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked"}
        )
        assert answer.error_code == 403 and answer.result is None
        bold = [{"type": "bold", "offset": 0, "length": 2}]
        sent = SendMessage(chat_id=1, text="hi", entities=bold)
        assert sent.entities[0].type == "bold"

        import logging
        import tgbroadcast.worker.runner
        from tgbroadcast.worker.aiogram_models import MODELS, build_models

        class Kept(logging.Handler):
            def __init__(self):
                super().__init__()
                self.records = []

            def emit(self, record):
                self.records.append(record.getMessage())

        kept = Kept()
        logging.getLogger("tgbroadcast.worker.aiogram_loading").addHandler(kept)
        build_models()
        assert all(model.__pydantic_complete__ for model in MODELS)
        assert kept.records == []  # built up front: not logged
        assert not Poll.__pydantic_complete__  # a worker never uses it: never built
        # One built after the start is, once: a send waited for it.
        Dice.model_validate({"emoji": "🎲", "value": 3})
        Dice.model_validate({"emoji": "🎲", "value": 4})
        assert Dice.__pydantic_complete__
        assert kept.records == [
            "aiogram's Dice built at its first use, after start-up (a send waited for it)"
        ], kept.records

        # Every aiogram model a worker's module names is one it builds as it starts (but
        # the methods' and answers' generic bases, never validated themselves).
        from aiogram.methods.base import TelegramMethod
        named = {
            value
            for name, module in sys.modules.items() if name.startswith("tgbroadcast.worker")
            for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, BaseModel)
            and value.__module__.startswith("aiogram.")
        } - {TelegramMethod, Response}
        assert named and named <= set(MODELS), named - set(MODELS)
        print("ok")
        """
    )
    assert _output(_started(script)).strip() == "ok"
