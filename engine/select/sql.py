"""S3 Select SQL (and S4's multi-object SQL) -> one sandboxed DuckDB SELECT.

Two steps, both needed for safety:

1. a token rewrite of the S3 dialect (``FROM s3object[*].a.b``, ``FLOAT``, ``UTCNOW()``, ``DATE_ADD(day, ...)``,
   quoted globs in FROM for multi-object queries) into DuckDB SQL;
2. a check of DuckDB's own parse tree (``json_serialize_sql``): exactly one SELECT statement, tables only from the
   allowed names (or CTEs), no table functions, only allow-listed functions. So ``read_csv('/etc/passwd')``,
   ``ATTACH``, ``INSTALL``, ``COPY`` and system catalogs never reach execution; the connection itself also runs
   with ``enable_external_access=false`` (runner.py) as a second wall.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import duckdb

from ..errors import ErrorCode, S3Error

MAX_EXPRESSION_BYTES = 256 * 1024
TABLE = "s3object"

_TOKEN = re.compile(r"""
    (?P<ws>\s+|--[^\n]*|/\*.*?\*/)
  | (?P<str>'(?:[^']|'')*')
  | (?P<qid>"(?:[^"]|"")*")
  | (?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<op><>|!=|<=|>=|\|\||::|[-+*/%<>=(),.;\[\]:])
""", re.VERBOSE | re.DOTALL)

DATE_PARTS = frozenset({"year", "month", "day", "hour", "minute", "second", "week", "quarter",
                        "timezone_hour", "timezone_minute"})
RENAMED = {"utcnow": "s4_utcnow", "to_timestamp": "s4_to_timestamp", "to_string": "s4_to_string",
           "char_length": "length", "character_length": "length", "date_add": "s4_date_add",
           "date_diff": "date_diff"}
CAST_TYPES = {"float": "DOUBLE", "string": "VARCHAR"}

#: Macros created on every query connection (runner.py) for S3 functions DuckDB lacks.
MACROS = (
    "CREATE MACRO s4_utcnow() AS get_current_timestamp()::TIMESTAMP",
    "CREATE MACRO s4_to_timestamp(s) AS CAST(s AS TIMESTAMP)",
    "CREATE MACRO s4_to_string(ts, fmt) AS strftime(CAST(ts AS TIMESTAMP), fmt)",
    "CREATE MACRO s4_date_add(p, n, ts) AS CAST(ts AS TIMESTAMP) + CASE lower(p) "
    "WHEN 'year' THEN to_years(CAST(n AS INTEGER)) WHEN 'month' THEN to_months(CAST(n AS INTEGER)) "
    "WHEN 'day' THEN to_days(CAST(n AS INTEGER)) WHEN 'hour' THEN to_hours(CAST(n AS INTEGER)) "
    "WHEN 'minute' THEN to_minutes(CAST(n AS INTEGER)) ELSE to_seconds(CAST(n AS INTEGER)) END",
)

ALLOWED_FUNCTIONS = frozenset("""
lower upper lcase ucase length strlen substring substr trim ltrim rtrim concat concat_ws replace position strpos
instr starts_with ends_with contains prefix suffix left right lpad rpad reverse split_part repeat regexp_matches
regexp_replace regexp_extract string_split like_escape ilike_escape not_like_escape not_ilike_escape md5 sha256
format printf ascii chr initcap
abs ceil ceiling floor round sqrt power pow exp ln log log10 log2 mod sign trunc greatest least pi
date_part datepart date_trunc datetrunc date_diff datediff date_sub extract strftime strptime try_strptime epoch
epoch_ms make_date make_timestamp current_date get_current_timestamp now year month day hour minute second
dayofweek dayofyear dayofmonth week weekofyear quarter to_years to_months to_days to_hours to_minutes to_seconds
age last_day monthname dayname isodow isoyear millisecond microsecond
coalesce nullif ifnull if
count count_star sum avg mean min max stddev stddev_samp stddev_pop variance var_samp var_pop median mode
approx_count_distinct string_agg group_concat list array_agg bool_and bool_or first last any_value arg_min
arg_max argmin argmax min_by max_by quantile_cont quantile_disc product
row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
struct_extract array_extract list_extract list_value struct_pack len array_length list_contains
json_extract json_extract_string to_json
s4_utcnow s4_to_timestamp s4_to_string s4_date_add
""".split())
ALLOWED_TABLE_REFS = frozenset({"BASE_TABLE", "SUBQUERY", "JOIN", "EMPTY", "EXPRESSION_LIST"})


@dataclass
class Translated:
    """The DuckDB query plus what the runner must provide: JSON path of s3object rows, globs by table name."""

    sql: str
    json_path: list[str] = field(default_factory=list)
    globs: dict[str, str] = field(default_factory=dict)


def _tokens(sql: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(sql):
        m = _TOKEN.match(sql, pos)
        if m is None:
            raise S3Error(ErrorCode.PARSE_UNEXPECTED_TOKEN, f"Unexpected character {sql[pos]!r} at offset {pos}.")
        kind = m.lastgroup or ""
        out.append((kind, m.group()))
        pos = m.end()
    return out


def _next_code(toks: list[tuple[str, str]], i: int) -> int:
    """Index of the next non-whitespace token at or after i (len(toks) if none)."""
    while i < len(toks) and toks[i][0] == "ws":
        i += 1
    return i


def _prev_word(out: list[tuple[str, str]]) -> str:
    for kind, text in reversed(out):
        if kind != "ws":
            return text.lower()
    return ""


def rewrite(expression: str, *, globs: bool = False) -> Translated:
    """The S3 dialect as DuckDB SQL (not yet validated: see translate)."""
    if len(expression.encode()) > MAX_EXPRESSION_BYTES:
        raise S3Error(ErrorCode.INVALID_REQUEST, "The SQL expression is too long (256 KiB at most).")
    toks = _tokens(expression)
    out: list[tuple[str, str]] = []
    result = Translated("")
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        low = text.lower()
        prev = _prev_word(out)
        if kind == "word" and low == TABLE and prev in ("from", "join", ","):
            i += 1
            j = _next_code(toks, i)
            if j + 2 < len(toks) and toks[j][1] == "[" and toks[j + 1][1] == "*" and toks[j + 2][1] == "]":
                i = j + 3
                while (j := _next_code(toks, i)) < len(toks) and toks[j][1] == ".":
                    k = _next_code(toks, j + 1)
                    if k >= len(toks) or toks[k][0] not in ("word", "qid"):
                        raise S3Error(ErrorCode.PARSE_UNEXPECTED_TOKEN, "Bad path after s3object[*].")
                    name = toks[k][1]
                    result.json_path.append(name[1:-1].replace('""', '"') if toks[k][0] == "qid" else name)
                    i = k + 1
            out.append(("word", TABLE))
            continue
        if kind == "str" and globs and prev in ("from", "join", ","):
            pattern = text[1:-1].replace("''", "'")
            name = f"s4_glob_{len(result.globs)}"
            result.globs[name] = pattern
            out.append(("word", name))
            i += 1
            continue
        if kind == "word" and low in CAST_TYPES and prev == "as":
            out.append(("word", CAST_TYPES[low]))
            i += 1
            continue
        if kind == "word" and low in RENAMED and (j := _next_code(toks, i + 1)) < len(toks) and toks[j][1] == "(":
            out.append(("word", RENAMED[low]))
            out.append(("op", "("))
            i = j + 1
            if low in ("date_add", "date_diff"):
                k = _next_code(toks, i)
                if k < len(toks) and toks[k][0] == "word" and toks[k][1].lower() in DATE_PARTS:
                    out.append(("str", f"'{toks[k][1].lower()}'"))
                    i = k + 1
            continue
        out.append((kind, text))
        i += 1
    result.sql = "".join(text for _, text in out).strip()
    return result


def _serialize(sql: str) -> dict[str, Any]:
    with duckdb.connect(":memory:", config={"enable_external_access": False}) as conn:
        row = conn.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    return json.loads(row[0]) if row else {"error": True, "error_message": "empty"}


def _walk(node: Any, tables: set[str], ctes: frozenset[str]) -> None:
    """Refuse anything in the parse tree that is not a plain query over the allowed tables.

    ``ctes`` are the CTE names in scope where ``node`` sits, as DuckDB binds them: a WITH's names are visible in
    its query and, in order, to the CTEs defined after each one; a CTE's own name inside its body only where it is
    the recursive part of a UNION (a RECURSIVE_CTE_NODE). Anywhere else DuckDB resolves the name in its catalog,
    so a name collected from the whole tree would let ``WITH pg_settings AS (SELECT * FROM pg_settings)`` or a
    sibling subquery's CTE name reach a catalog view.
    """
    if isinstance(node, list):
        for item in node:
            _walk(item, tables, ctes)
        return
    if not isinstance(node, dict):
        return
    ref_type = node.get("type")
    if "table_name" in node or ref_type in ("TABLE_FUNCTION", "PIVOT", "SHOW_REF", "COLUMN_DATA", "DELIM_GET"):
        if ref_type not in ALLOWED_TABLE_REFS:
            raise S3Error(ErrorCode.UNSUPPORTED_SQL_OPERATION, "Only s3object can be queried: table functions "
                          "and other data sources are not allowed.")
        name = str(node.get("table_name", "")).lower()
        if node.get("schema_name") or node.get("catalog_name") or (name not in tables and name not in ctes):
            raise S3Error(ErrorCode.UNSUPPORTED_SQL_OPERATION,
                          f"Unknown table {node.get('table_name')!r}: only {', '.join(sorted(tables))} can be queried.")
    if node.get("class") in ("FUNCTION", "WINDOW", "AGGREGATE") and "function_name" in node:
        fname = str(node["function_name"]).lower()
        if node.get("schema") or node.get("catalog") or (
                not node.get("is_operator") and fname not in ALLOWED_FUNCTIONS):
            raise S3Error(ErrorCode.UNSUPPORTED_SQL_OPERATION, f"Function {fname}() is not supported.")
    inner = ctes
    cte_map = node.get("cte_map")
    if isinstance(cte_map, dict):
        for entry in cte_map.get("map", []):
            if not isinstance(entry, dict) or "key" not in entry:
                raise S3Error(ErrorCode.UNSUPPORTED_SQL_OPERATION, "Unsupported WITH clause.")
            _walk(entry.get("value"), tables, inner)  # sees the outer names and the CTEs defined before it
            inner = inner | {str(entry["key"]).lower()}
    recursive = str(node.get("cte_name", "")).lower() if ref_type == "RECURSIVE_CTE_NODE" else ""
    for key, value in node.items():
        if key == "cte_map":
            continue
        _walk(value, tables, inner | {recursive} if recursive and key == "right" else inner)


def validate(sql: str, tables: set[str]) -> None:
    """Raise S3Error unless ``sql`` is a single SELECT touching only ``tables``."""
    tree = _serialize(sql)
    if tree.get("error"):
        message = str(tree.get("error_message", "syntax error"))
        if "Only SELECT" in message:
            raise S3Error(ErrorCode.UNSUPPORTED_SQL_OPERATION, "Only SELECT queries are allowed.")
        raise S3Error(ErrorCode.PARSE_UNEXPECTED_TOKEN, message)
    statements = tree.get("statements", [])
    if len(statements) != 1:
        raise S3Error(ErrorCode.UNSUPPORTED_SQL_OPERATION, "Exactly one SELECT statement is allowed.")
    _walk(statements[0], {t.lower() for t in tables}, frozenset())


def translate(expression: str, *, globs: bool = False) -> Translated:
    """S3 Select (globs=False) or multi-object SQL (globs=True) -> a validated DuckDB query."""
    if not expression.strip():
        raise S3Error(ErrorCode.MISSING_REQUIRED_PARAMETER, "The SQL expression is empty.")
    result = rewrite(expression, globs=globs)
    validate(result.sql, set(result.globs) if globs else {TABLE})
    if globs and not result.globs:
        raise S3Error(ErrorCode.INVALID_REQUEST, "The query names no objects: use a quoted glob such as "
                      "FROM 'logs/*.csv'.")
    return result
