"""Settings declared once, as dataclass fields, and the command-line options derived from them.

    @dataclass
    class Settings:
        port: int = setting(50051, "TCP port; 0 picks a free one", group="network")
        measure: bool = setting(True, "time the tail at start-up", flag="--no-measure")

Each field's metadata carries its help text, its option group and, where the option differs from
the field, its flag and unit (`scale`: the field holds the option's value times scale, e.g. MiB on the
command line, bytes in the field). A boolean whose default is True gets a negating flag. Fields with
cli=False are set only from code.
"""
import argparse
import dataclasses
import types
import typing

try:
    import tomllib
except ModuleNotFoundError:          # Python 3.10 (JetPack 6's): the same parser, from PyPI
    import tomli as tomllib

_NO_DEFAULT = dataclasses.MISSING


def setting(default=_NO_DEFAULT, help: str = "", *, flag: str | None = None, scale: float = 1.0,
            group: str | None = None, cli: bool = True, choices=None, metavar: str | None = None, factory=None):
    """A dataclass field with what the command line needs to offer it (factory: a default_factory)."""
    meta = {"help": help, "flag": flag, "scale": scale, "group": group, "cli": cli, "choices": choices,
            "metavar": metavar}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _base_type(annotation):
    """int, float, str, bool or pathlib.Path from an annotation such as `pathlib.Path | None`."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One option per field of the dataclass cls (fields with cli=False are skipped)."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta or not meta.get("cli", True):
            continue
        target = parser if not meta.get("group") else groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        kind = _base_type(f.type)
        required = f.default is _NO_DEFAULT
        if kind is bool:
            target.add_argument(flag_of(f), dest=f.name, action="store_false" if f.default else "store_true",
                                help=meta["help"])
            continue
        scale = meta.get("scale", 1.0)
        default = None if required or f.default is None else (f.default / scale if scale != 1.0 else f.default)
        help_text = meta["help"] + ("" if required or f.default is None else " (default %(default)s)")
        target.add_argument(flag_of(f), dest=f.name, type=kind, default=default, required=required,
                            choices=meta.get("choices"), metavar=meta.get("metavar"), help=help_text)


def from_args(cls, args: argparse.Namespace, **overrides):
    """An instance of cls from parsed options (scaled back to the field's unit), with overrides."""
    values = {}
    for f in dataclasses.fields(cls):
        if not f.metadata or not f.metadata.get("cli", True) or not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        scale = f.metadata.get("scale", 1.0)
        if value is not None and scale != 1.0:
            value = type(f.default)(value * scale) if f.default not in (None, _NO_DEFAULT) else value * scale
        values[f.name] = value
    return cls(**(values | overrides))
