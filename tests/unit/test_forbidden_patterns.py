"""What the package must never do (issue 6, item 7), checked on its syntax trees.

Every module under ``collab/`` is parsed with :mod:`ast` and scanned for:

- ``pickle``: importing a deserialiser that runs code from its input
  (pickle, cPickle, _pickle, marshal, shelve, dill, cloudpickle);
- ``eval``: calling the builtins ``eval`` or ``exec``;
- ``shell``: a ``shell=`` argument other than ``False`` on any call, or a call
  that always goes through a shell (``os.system``, ``os.popen``,
  ``subprocess.getoutput``, ``asyncio.create_subprocess_shell``);
- ``subprocess-string``: a subprocess started with one command string
  (``subprocess.run("ls -l")``) instead of an argument list;
- ``verify-off``: verification turned off: ``verify_signature`` False in an
  options dict or keyword (PyJWT), or ``verify=False`` (old PyJWT, TLS clients);
- ``jwt-none``: the ``none`` algorithm in ``algorithm=``/``algorithms=``
  (literals and module constants);
- ``yaml``: ``yaml.load`` without the safe loader, ``unsafe_load``, ``full_load``.

Names are resolved through each module's imports (``from subprocess import
run as r`` makes ``r(...)`` a ``subprocess.run`` call). The rules are
themselves tested: a sample per rule must be caught, and safe twins must not.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "collab"

PICKLE_MODULES = frozenset({"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle"})
EVAL_CALLS = frozenset({"eval", "exec", "builtins.eval", "builtins.exec"})
ALWAYS_SHELL = frozenset({
    "os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput", "asyncio.create_subprocess_shell",
})
#: Calls whose first argument (or ``args=``) is the command: a list, never one string.
PROCESS_CALLS = frozenset({
    "subprocess.run", "subprocess.call", "subprocess.check_call", "subprocess.check_output", "subprocess.Popen",
    "trio.run_process", "trio.lowlevel.open_process",
})
YAML_UNSAFE = frozenset({"yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all"})
YAML_LOADS = frozenset({"yaml.load", "yaml.load_all"})
SAFE_YAML_LOADERS = frozenset({"SafeLoader", "CSafeLoader"})


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.detail}"


def scan(source: str, path: str = "<sample>") -> list[Finding]:
    """The forbidden patterns in one module's source."""
    checker = _Checker(ast.parse(source, filename=path), path)
    return checker.findings


class _Checker(ast.NodeVisitor):
    def __init__(self, tree: ast.Module, path: str) -> None:
        self.path = path
        self.findings: list[Finding] = []
        self.aliases = _aliases(tree)
        self.constants = _module_constants(tree)
        self.visit(tree)

    def _found(self, node: ast.AST, rule: str, detail: str) -> None:
        self.findings.append(Finding(self.path, getattr(node, "lineno", 0), rule, detail))

    # --- imports ---------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] in PICKLE_MODULES:
                self._found(node, "pickle", f"import {alias.name}")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module and node.module.split(".")[0] in PICKLE_MODULES:
            self._found(node, "pickle", f"from {node.module} import ...")
        self.generic_visit(node)

    # --- dict literals: options={"verify_signature": False} wherever it is built -------

    def visit_Dict(self, node: ast.Dict) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            if _is_const(key, "verify_signature") and _is_const(value, False):
                self._found(node, "verify-off", '"verify_signature": False')
        self.generic_visit(node)

    # --- calls -----------------------------------------------------------------------

    def visit_Call(self, node: ast.Call) -> None:
        name = self._qualname(node.func)
        if name in EVAL_CALLS:
            self._found(node, "eval", f"{name}(...)")
        if name in ALWAYS_SHELL:
            self._found(node, "shell", f"{name}(...) runs a shell")
        if name in PROCESS_CALLS:
            command = node.args[0] if node.args else _keyword(node, "args")
            if command is not None and self._is_str(command):
                self._found(node, "subprocess-string", f"{name}(...) with one command string")
        if name in YAML_UNSAFE:
            self._found(node, "yaml", f"{name}(...)")
        if name in YAML_LOADS:
            loader = node.args[1] if len(node.args) > 1 else _keyword(node, "Loader")
            loader_name = self._qualname(loader) if loader is not None else None
            if loader_name is None or loader_name.rsplit(".", 1)[-1] not in SAFE_YAML_LOADERS:
                self._found(node, "yaml", f"{name}(...) without SafeLoader")
        for keyword in node.keywords:
            if keyword.arg == "shell" and not _is_const(keyword.value, False):
                self._found(node, "shell", "shell= other than False")
            elif keyword.arg in ("verify", "verify_signature") and _is_const(keyword.value, False):
                self._found(node, "verify-off", f"{keyword.arg}=False")
            elif keyword.arg in ("algorithm", "algorithms"):
                if any(s.strip().lower() == "none" for s in self._strings(keyword.value)):
                    self._found(node, "jwt-none", f'{keyword.arg} includes "none"')
        self.generic_visit(node)

    # --- resolution --------------------------------------------------------------------

    def _qualname(self, expr: ast.expr) -> str | None:
        """``subprocess.run`` for ``subprocess.run``, ``sp.run`` (import subprocess as sp) or ``run``
        (from subprocess import run); None for anything that is not a dotted name."""
        if isinstance(expr, ast.Name):
            return self.aliases.get(expr.id, expr.id)
        if isinstance(expr, ast.Attribute):
            base = self._qualname(expr.value)
            return f"{base}.{expr.attr}" if base is not None else None
        return None

    def _is_str(self, expr: ast.expr, depth: int = 0) -> bool:
        """Whether ``expr`` evaluates to one string (a literal, an f-string, a concatenation or
        ``%``/``.format`` of one, or a module constant holding one)."""
        if depth > 5:
            return False
        if isinstance(expr, ast.Constant):
            return isinstance(expr.value, str)
        if isinstance(expr, ast.JoinedStr):
            return True
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Add, ast.Mod)):
            return self._is_str(expr.left, depth + 1) or self._is_str(expr.right, depth + 1)
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr == "format":
            return self._is_str(expr.func.value, depth + 1)
        if isinstance(expr, ast.Name) and expr.id in self.constants:
            return self._is_str(self.constants[expr.id], depth + 1)
        return False

    def _strings(self, expr: ast.expr, depth: int = 0) -> list[str]:
        """The string literals ``expr`` is made of (through lists, tuples, sets and module constants)."""
        if depth > 5:
            return []
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return [expr.value]
        if isinstance(expr, (ast.List, ast.Tuple, ast.Set)):
            return [s for element in expr.elts for s in self._strings(element, depth + 1)]
        if isinstance(expr, ast.Name) and expr.id in self.constants:
            return self._strings(self.constants[expr.id], depth + 1)
        return []


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted name it was imported as (absolute imports only)."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _module_constants(tree: ast.Module) -> dict[str, ast.expr]:
    """Module-level ``NAME = <expression>`` assignments (``NAME: T = ...`` too)."""
    constants: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            constants[node.targets[0].id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            constants[node.target.id] = node.value
    return constants


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(expr: ast.expr | None, value: object) -> bool:
    return isinstance(expr, ast.Constant) and type(expr.value) is type(value) and expr.value == value


# --- the package -------------------------------------------------------------------------

def test_the_package_has_none_of_the_forbidden_patterns() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert PACKAGE / "auth" / "tokens.py" in modules and PACKAGE / "workers.py" in modules
    findings = [
        finding for path in modules
        for finding in scan(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert findings == [], "forbidden in the package:\n" + "\n".join(map(str, findings))


# --- the checker itself -------------------------------------------------------------------

CAUGHT = [
    ("pickle", "import pickle\npickle.loads(data)"),
    ("pickle", "import cPickle as p"),
    ("pickle", "import _pickle"),
    ("pickle", "from marshal import loads"),
    ("pickle", "import shelve"),
    ("eval", "eval('1 + 1')"),
    ("eval", "exec(source)"),
    ("eval", "import builtins\nbuiltins.eval(source)"),
    ("shell", "import subprocess\nsubprocess.run(['ls'], shell=True)"),
    ("shell", "import subprocess\nsubprocess.Popen(['ls'], shell=use_shell)"),
    ("shell", "spawn(command, shell=True)"),
    ("shell", "import os\nos.system('ls')"),
    ("shell", "from os import popen\npopen(command)"),
    ("shell", "import asyncio\nasyncio.create_subprocess_shell(command)"),
    ("subprocess-string", "import subprocess\nsubprocess.run('ls -l')"),
    ("subprocess-string", "from subprocess import check_output as co\nco(f'git show {ref}')"),
    ("subprocess-string", "import subprocess as sp\nsp.Popen(args='rm ' + path)"),
    ("subprocess-string", "import subprocess\nCMD = 'ls'\nsubprocess.call(CMD)"),
    ("subprocess-string", "import trio\nasync def f():\n    await trio.run_process('ls {}'.format(path))"),
    ("verify-off", "import jwt\njwt.decode(token, key, algorithms=['HS256'], options={'verify_signature': False})"),
    ("verify-off", "import jwt\nOPTIONS = {'verify_signature': False}\njwt.decode(token, key, options=OPTIONS)"),
    ("verify-off", "import jwt\njwt.decode(token, key, options=dict(verify_signature=False))"),
    ("verify-off", "import jwt\njwt.decode(token, key, verify=False)"),
    ("jwt-none", "import jwt\njwt.decode(token, key, algorithms=['HS256', 'none'])"),
    ("jwt-none", "import jwt\nALGORITHM = 'None'\njwt.encode(claims, key, algorithm=ALGORITHM)"),
    ("yaml", "import yaml\nyaml.load(text)"),
    ("yaml", "import yaml\nyaml.load(text, Loader=yaml.Loader)"),
    ("yaml", "from yaml import FullLoader, load\nload(text, FullLoader)"),
    ("yaml", "import yaml\nyaml.unsafe_load(text)"),
    ("yaml", "import yaml\nyaml.full_load_all(text)"),
]

SAFE = [
    "import json\njson.loads(text)",
    "import subprocess, sys\nsubprocess.run([sys.executable, '-m', 'collab'], check=True)",
    "import subprocess\nsubprocess.Popen(command, shell=False)",
    "result = redis.eval(script, 0)",  # a method of that name, not the builtin
    "import jwt\njwt.decode(token, key, algorithms=['HS256'], options={'verify_exp': False})",  # time checked by us
    "import jwt\njwt.encode(claims, key, algorithm='HS256')",
    "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)",
    "from yaml import CSafeLoader, load_all\nload_all(text, CSafeLoader)",
    "import yaml\nyaml.safe_load(text)",
    "body.decode('utf-8')",
]


@pytest.mark.parametrize(
    ("rule", "source"), CAUGHT, ids=[f"{rule}: {source.replace(chr(10), '; ')}" for rule, source in CAUGHT],
)
def test_each_rule_catches_its_sample(rule: str, source: str) -> None:
    assert [finding.rule for finding in scan(source)] == [rule]


@pytest.mark.parametrize("source", SAFE)
def test_safe_code_is_not_flagged(source: str) -> None:
    assert scan(source) == []


def test_a_finding_names_the_file_and_line() -> None:
    (finding,) = scan("x = 1\n\neval(x)\n", "collab/example.py")
    assert str(finding) == "collab/example.py:3: eval: eval(...)"
