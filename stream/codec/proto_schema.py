"""Protobuf message types from schema files, with no generated ``_pb2`` module.

A message type comes from a **descriptor set** (``.desc``, ``.pb``, ``.binpb``:
``protoc --include_imports --descriptor_set_out=FILE``), which needs nothing
but the protobuf runtime, or from ``.proto`` text, compiled in-process by
``grpcio-tools``' protoc (``pip install 'streamlearn[proto]'``). Each schema
gets its own descriptor pool, so two versions of one message never clash.

Which message of the file: ``message`` by name (full ``pkg.Event`` or just
``Event``), else the first message of the file; for framed values the Confluent
message indexes (:mod:`stream.codec.wire`) pick it.

Examples
--------
>>> schema = compile_proto('syntax = "proto3"; message Event { repeated double x = 1; int32 y = 2; }')
>>> Event = message_class(schema)
>>> Event.DESCRIPTOR.full_name, message_indexes(Event.DESCRIPTOR)
('Event', (0,))
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FileDescriptor
from google.protobuf.message import DecodeError, Message

from stream.core.errors import ConfigError

_DESCRIPTOR_SET_SUFFIXES = (".desc", ".pb", ".binpb", ".protoset")


@dataclass(frozen=True)
class ProtoSchema:
    """The main file of a loaded schema; ``text`` is its ``.proto`` source when known."""

    file: FileDescriptor
    text: str | None = None


def load_proto_schema(path: str | Path) -> ProtoSchema:
    """The schema in ``path``: a ``.proto`` file or a descriptor set.

    Raises:
        ConfigError: the file is missing or unreadable, does not compile, or
            ``.proto`` support (grpcio-tools) is not installed.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the Protobuf schema {path}: {exc}") from None
    if path.suffix in _DESCRIPTOR_SET_SUFFIXES:
        return ProtoSchema(_load_descriptor_set(data, str(path)))
    if path.suffix != ".proto":
        raise ConfigError(
            f"a Protobuf schema is a .proto file or a descriptor set ({', '.join(_DESCRIPTOR_SET_SUFFIXES)}),"
            f" got {path.name}"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the Protobuf schema {path} is not UTF-8: {exc}") from None
    try:
        return compile_proto(text, name=path.name, include=(str(path.parent),))
    except ConfigError as exc:
        raise ConfigError(f"the Protobuf schema {path}: {exc}") from None


def compile_proto(text: str, *, name: str = "schema.proto", include: Sequence[str] = ()) -> ProtoSchema:
    """Compile ``.proto`` source with grpcio-tools' protoc (well-known imports resolve).

    Raises:
        ConfigError: grpcio-tools is missing, or protoc rejects the source (its message included).
    """
    try:
        from grpc_tools import protoc
    except ImportError:
        raise ConfigError(
            ".proto schemas need protoc: pip install 'streamlearn[proto]' (grpcio-tools), "
            "or pass a descriptor set (protoc --include_imports --descriptor_set_out=schema.desc)"
        ) from None
    bundled = os.path.join(os.path.dirname(protoc.__file__), "_proto")  # google/protobuf/*.proto
    with tempfile.TemporaryDirectory(prefix="streamlearn-proto-") as tmp:
        Path(tmp, name).write_text(text, encoding="utf-8")
        out = os.path.join(tmp, "schema.desc")
        args = ["protoc", f"-I{tmp}", *(f"-I{d}" for d in include), f"-I{bundled}"]
        args += ["--include_imports", f"--descriptor_set_out={out}", name]
        rc, errors = _with_stderr(lambda: protoc.main(args))
        if rc != 0:
            errors = errors.replace(tmp + os.sep, "").strip()  # name the file, not the temp dir
            raise ConfigError(f"protoc failed: {errors or f'exit code {rc}'}")
        return ProtoSchema(_load_descriptor_set(Path(out).read_bytes(), name, main=name), text)


def message_class(schema: ProtoSchema, message: str | None = None) -> type[Message]:
    """The class of ``message`` (full or short name), or of the file's first message.

    Raises:
        ConfigError: no such message, or the file defines none.
    """
    return message_factory.GetMessageClass(find_message(schema.file, message))


def find_message(file: FileDescriptor, message: str | None = None) -> Descriptor:
    """The descriptor of ``message`` in ``file`` (see :func:`message_class`)."""
    top = list(file.message_types_by_name.values())
    if not top:
        raise ConfigError(f"the Protobuf schema {file.name} defines no message")
    if message is None:
        return top[0]
    everything = list(_walk(top))
    found = [d for d in everything if message in (d.full_name, d.name)]
    if not found:
        names = ", ".join(d.full_name for d in everything)
        raise ConfigError(f"no message {message!r} in the Protobuf schema {file.name} (it has {names})")
    return found[0]


def message_at(file: FileDescriptor, indexes: Sequence[int]) -> Descriptor:
    """The message the Confluent message ``indexes`` point at.

    Raises:
        LookupError: the path leads nowhere in ``file``.
    """
    choices = list(file.message_types_by_name.values())
    found = None
    for index in indexes:
        if index >= len(choices):
            raise LookupError(f"message indexes {list(indexes)} do not exist in the schema")
        found = choices[index]
        choices = list(found.nested_types)
    if found is None:
        raise LookupError("empty message indexes")
    return found


def message_indexes(descriptor: Descriptor) -> tuple[int, ...]:
    """The Confluent message indexes of ``descriptor`` within its file."""
    path = []
    while descriptor.containing_type is not None:
        path.append(list(descriptor.containing_type.nested_types).index(descriptor))
        descriptor = descriptor.containing_type
    path.append(list(descriptor.file.message_types_by_name.values()).index(descriptor))
    return tuple(reversed(path))


def _walk(messages: list[Descriptor]):
    for d in messages:
        yield d
        yield from _walk(list(d.nested_types))


def _load_descriptor_set(data: bytes, source: str, main: str | None = None) -> FileDescriptor:
    """A fresh pool holding every file of the set; returns ``main`` (default: the set's last file).

    protoc writes a set's files dependencies first, so the last is the one named on its command line.
    """
    fds = descriptor_pb2.FileDescriptorSet()
    try:
        fds.ParseFromString(data)
    except DecodeError as exc:
        raise ConfigError(f"{source} is not a Protobuf descriptor set: {exc}") from None
    if not fds.file:
        raise ConfigError(f"{source} holds no .proto file")
    pool = descriptor_pool.DescriptorPool()
    try:
        for file in fds.file:
            pool.Add(file)
        return pool.FindFileByName(main or fds.file[-1].name)
    except (TypeError, KeyError) as exc:
        raise ConfigError(f"{source}: {exc} (was it written with protoc --include_imports?)") from None


def _with_stderr(call):
    """``call()``'s result and what it wrote to file descriptor 2 (protoc reports errors there, in C++)."""
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            result = call()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        return result, sink.read().decode("utf-8", "replace")
