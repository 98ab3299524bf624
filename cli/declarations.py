"""What an adapter class (or a dataset reader) declares, read from its source with `ast`, importing nothing.

`fssbench eval` checks a command line against these declarations (names, options, backbones, weights,
support annotations, the extras the method's module `require`s) before torch or any model library is
imported, so a mistake is reported in about the time `fssbench list` takes. Only literal declarations are
read: constants, tuples, lists, sets, dicts (with `**`), f-strings and `+` over module constants, `frozenset`
/`tuple` of them (of a dict: its keys) and `WeightSpec(...)`; a class whose declarations are computed (e.g.
in `__init_subclass__`) is `None` here, and the caller imports it instead.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fssbench.harness.errors import UsageError

CONTRACT = "fssbench.harness.contract"
DECLARED = ("support_annotations", "weights", "supports_random_init", "option_defaults", "option_choices",
            "backbones")


class NotStatic(Exception):
    """The value is computed, not declared: the class must be imported to know it."""


@dataclass(frozen=True)
class DeclaredWeight:
    """A `WeightSpec` as written in the source (same fields)."""

    name: str
    expected: str
    source: str
    required: bool = True


@dataclass
class Declarations:
    """The class attributes of an adapter that planning reads; duck-types the class for the resolvers."""

    target: str
    support_annotations: frozenset[str]
    weights: tuple[DeclaredWeight, ...]
    supports_random_init: bool
    option_defaults: dict[str, Any]
    option_choices: dict[str, tuple[str, ...]]
    backbones: tuple[str, ...]
    tasks: frozenset[str]
    extras: dict[str, tuple[str, str]] = field(default_factory=dict)  # module -> (purpose, extra)

    def check_choices(self, options: dict[str, Any]) -> None:
        for name, allowed in self.option_choices.items():
            if options[name] not in allowed:
                raise UsageError(f"--option {name}={options[name]}: expected one of {', '.join(allowed)}")


def adapter_declarations(target: str) -> Declarations | None:
    """The declarations of the adapter class `module:Class` (or `path/to/file.py:Class`), or None when they
    are computed rather than declared."""
    location, _, class_name = target.rpartition(":")
    source = StaticModule.of(location)
    if source is None:
        return None
    try:
        values = {name: source.class_attribute(class_name, name) for name in DECLARED}
        tasks = frozenset(source.all_class_attributes(class_name, "task"))
    except (NotStatic, RecursionError):
        return None
    values["weights"] = tuple(values["weights"])
    return Declarations(target=target, tasks=tasks, extras=source.required_extras(), **values)


def class_attribute(target: str, attr: str) -> Any:
    """A class attribute read statically (e.g. a dataset reader's `layout`); NotStatic when it is computed."""
    location, _, class_name = target.rpartition(":")
    source = StaticModule.of(location)
    if source is None:
        raise NotStatic(target)
    return source.class_attribute(class_name, attr)


def defines(target: str, attr: str) -> bool:
    """Whether the class `module:Class` itself (not its bases) defines `attr` in its body."""
    location, _, class_name = target.rpartition(":")
    source = StaticModule.of(location)
    node = source.classes.get(class_name) if source else None
    return node is not None and attr in _own_names(node)


def _own_names(node: ast.ClassDef) -> set[str]:
    names = set()
    for statement in node.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(statement.name)
        elif isinstance(statement, ast.Assign):
            names |= {t.id for t in statement.targets if isinstance(t, ast.Name)}
        elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            names.add(statement.target.id)
    return names


class StaticModule:
    """One module's source: its top-level assignments, classes and imports, evaluated on demand."""

    def __init__(self, name: str, path: Path) -> None:
        self.name, self.path = name, path
        self.tree = ast.parse(path.read_text(encoding="utf-8"))
        self.assignments: dict[str, ast.expr] = {}
        self.classes: dict[str, ast.ClassDef] = {}
        self.imports: dict[str, tuple[str, str]] = {}  # local name -> (module, attribute)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in self.tree.body:
            if isinstance(node, ast.ClassDef):
                self.classes[node.name] = node
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                self.assignments[node.targets[0].id] = node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                self.assignments[node.target.id] = node.value
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for alias in node.names:
                    self.imports[alias.asname or alias.name] = (base, alias.name)

    @staticmethod
    @functools.lru_cache(maxsize=None)
    def of(location: str) -> StaticModule | None:
        """A module by import name (found without importing it), or a .py file by path."""
        if location.endswith(".py"):
            path = Path(location)
            return StaticModule(path.stem, path) if path.is_file() else None
        try:
            spec = importlib.util.find_spec(location)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return None
        return StaticModule(location, Path(spec.origin))

    # classes

    def _class(self, name: str) -> tuple[StaticModule, ast.ClassDef]:
        if name in self.classes:
            return self, self.classes[name]
        if name in self.imports:
            module, attr = self.imports[name]
            other = StaticModule.of(module) if module.startswith("fssbench.") else None
            if other is not None:
                return other._class(attr)
        raise NotStatic(f"{self.name}:{name}")

    def _lineage(self, name: str) -> list[tuple[StaticModule, ast.ClassDef]]:
        """The class and its bases, depth first (the adapters' hierarchies are single chains and diamonds
        whose shared base defines the attribute, where this order agrees with Python's)."""
        module, node = self._class(name)
        if node.keywords or ("__init_subclass__" in _own_names(node) and module.name != CONTRACT):
            raise NotStatic(f"{module.name}:{name} computes its class attributes")
        lineage = [(module, node)]
        for base in node.bases:
            if isinstance(base, ast.Name) and base.id in ("ABC", "object"):
                continue
            if not isinstance(base, ast.Name):
                raise NotStatic(ast.unparse(base))
            lineage += [item for item in module._lineage(base.id) if item not in lineage]
        return lineage

    def class_attribute(self, class_name: str, attr: str) -> Any:
        for module, node in self._lineage(class_name):
            for statement in node.body:
                if isinstance(statement, ast.Assign) and any(isinstance(t, ast.Name) and t.id == attr
                                                             for t in statement.targets):
                    return module.evaluate(statement.value)
                if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                        and statement.target.id == attr and statement.value is not None):
                    return module.evaluate(statement.value)
        raise NotStatic(f"{self.name}:{class_name}.{attr}")

    def all_class_attributes(self, class_name: str, attr: str) -> list[Any]:
        """`attr` as each class of the lineage defines it (how the contract derives `tasks`)."""
        values = []
        for module, node in self._lineage(class_name):
            if attr in _own_names(node):
                values.append(module.class_attribute(node.name, attr))
        return values

    def required_extras(self) -> dict[str, tuple[str, str]]:
        """module -> (purpose, extra) of every `require("module", "purpose", "extra")` call in this module."""
        found = {}
        for node in ast.walk(self.tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute))
                    and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr) == "require"
                    and len(node.args) == 3 and all(isinstance(a, ast.Constant) for a in node.args)):
                module, purpose, extra = (a.value for a in node.args)
                found[module] = (purpose, extra)
        return found

    # values

    def value(self, name: str) -> Any:
        if name in self.assignments:
            return self.evaluate(self.assignments[name])
        if name in self.imports:
            module, attr = self.imports[name]
            other = StaticModule.of(module) if module.startswith("fssbench.") else None
            if other is not None:
                return other.value(attr)
        raise NotStatic(f"{self.name}.{name}")

    def evaluate(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = [self.evaluate(item) for item in node.elts]
            return {ast.Tuple: tuple, ast.List: list, ast.Set: set}[type(node)](items)
        if isinstance(node, ast.Dict):
            result = {}
            for key, value in zip(node.keys, node.values):
                if key is None:
                    result.update(self.evaluate(value))
                else:
                    result[self.evaluate(key)] = self.evaluate(value)
            return result
        if isinstance(node, ast.JoinedStr):
            parts = []
            for part in node.values:
                if isinstance(part, ast.FormattedValue):
                    if part.conversion != -1 or part.format_spec is not None:
                        raise NotStatic(ast.unparse(node))
                    parts.append(str(self.evaluate(part.value)))
                else:
                    parts.append(part.value)
            return "".join(parts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.evaluate(node.left) + self.evaluate(node.right)
        if isinstance(node, ast.Name):
            return self.value(node.id)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            return self.class_attribute(node.value.id, node.attr)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return self._call(node)
        raise NotStatic(ast.unparse(node))

    def _call(self, node: ast.Call) -> Any:
        function = node.func.id
        if function == "WeightSpec":
            return DeclaredWeight(*(self.evaluate(a) for a in node.args),
                                  **{k.arg: self.evaluate(k.value) for k in node.keywords})
        if function in ("frozenset", "tuple", "set", "list") and len(node.args) <= 1 and not node.keywords:
            if not node.args:
                return {"frozenset": frozenset, "tuple": tuple, "set": set, "list": list}[function]()
            argument = node.args[0]
            items = self._keys(argument.id) if isinstance(argument, ast.Name) else self.evaluate(argument)
            return {"frozenset": frozenset, "tuple": tuple, "set": set, "list": list}[function](items)
        raise NotStatic(ast.unparse(node))

    def _keys(self, name: str) -> list[Any]:
        """The keys of the dict `name` (its values may be computed): a dict literal, or a comprehension
        `{k: ... for k, v in OTHER.items()}` (or `for k in OTHER`) over one."""
        owner, local = self._owner(name)
        definition = owner.assignments[local]
        if isinstance(definition, ast.Dict):
            return [owner.evaluate(key) for key in definition.keys if key is not None]
        if isinstance(definition, ast.DictComp) and len(definition.generators) == 1:
            loop = definition.generators[0]
            key, source = loop.target, loop.iter
            if isinstance(key, ast.Tuple) and key.elts:
                key = key.elts[0]
            if (isinstance(source, ast.Call) and isinstance(source.func, ast.Attribute) and not source.args
                    and source.func.attr in ("items", "keys")):
                source = source.func.value
            if (not loop.ifs and isinstance(key, ast.Name) and isinstance(definition.key, ast.Name)
                    and definition.key.id == key.id and isinstance(source, ast.Name)):
                return owner._keys(source.id)
        return list(owner.evaluate(definition))

    def _owner(self, name: str) -> tuple[StaticModule, str]:
        if name in self.assignments:
            return self, name
        if name in self.imports:
            module, attr = self.imports[name]
            other = StaticModule.of(module) if module.startswith("fssbench.") else None
            if other is not None:
                return other._owner(attr)
        raise NotStatic(f"{self.name}.{name}")
