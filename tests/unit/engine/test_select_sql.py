"""S3 Select dialect -> DuckDB translation, and the sandbox that refuses everything but the queried object."""

from __future__ import annotations

import pytest

from s4.engine.errors import S3Error
from s4.engine.select.sql import translate


def test_plain_select_passes_through() -> None:
    q = translate("SELECT name, salary FROM s3object WHERE CAST(salary AS INT) > 100000")
    assert q.sql == "SELECT name, salary FROM s3object WHERE CAST(salary AS INT) > 100000"


def test_json_path_alias_and_types() -> None:
    q = translate("select s.a.b, _1 from S3Object[*].x.\"Y\" s where CAST(s.f as FLOAT) > 1.5 limit 3")
    assert q.json_path == ["x", "Y"]
    assert q.sql == "select s.a.b, _1 from s3object s where CAST(s.f as DOUBLE) > 1.5 limit 3"


def test_s3_functions_are_mapped() -> None:
    q = translate("SELECT UTCNOW(), DATE_ADD(day, 1, TO_TIMESTAMP(s.t)), DATE_DIFF(year, a, b), "
                  "CHAR_LENGTH(x) FROM s3object s")
    assert "s4_utcnow()" in q.sql and "s4_date_add('day', 1, s4_to_timestamp(s.t))" in q.sql
    assert "date_diff('year', a, b)" in q.sql and "length(x)" in q.sql


def test_ctes_windows_and_globs() -> None:
    translate("with c as (select * from s3object) select count(*) from c")
    translate("select *, row_number() over (order by a) from s3object")
    q = translate("SELECT * FROM 'logs/*.csv' a JOIN '**/*.parquet' b ON a.x = b.x", globs=True)
    assert q.globs == {"s4_glob_0": "logs/*.csv", "s4_glob_1": "**/*.parquet"}
    assert q.sql == "SELECT * FROM s4_glob_0 a JOIN s4_glob_1 b ON a.x = b.x"


@pytest.mark.parametrize("sql", [
    "select * from read_csv('/etc/passwd')",
    "select * from read_csv_auto('/etc/passwd')",
    "select * from '/etc/passwd'",
    "ATTACH '/tmp/x.db' AS x",
    "INSTALL httpfs",
    "LOAD httpfs",
    "COPY (select * from s3object) TO '/tmp/out.csv'",
    "COPY s3object TO '/tmp/out.csv'",
    "select 1; select 2",
    "select * from s3object; drop table s3object",
    "select * from other_table",
    "select * from duckdb_settings()",
    "select * from information_schema.tables",
    "select * from s3object, pg_catalog.pg_class",
    "select getenv('HOME') from s3object",
    "select * from s3object where x in (select * from glob('*'))",
    "PRAGMA version",
    "SET threads = 8",
    "CREATE TABLE t AS SELECT 1",
    "select * from main.s3object",
])
def test_hostile_sql_is_refused(sql: str) -> None:
    with pytest.raises(S3Error) as info:
        translate(sql)
    assert info.value.code.aws_code in ("UnsupportedSqlOperation", "ParseUnexpectedToken")


def test_glob_mode_refuses_s3object_and_files() -> None:
    with pytest.raises(S3Error):
        translate("select * from s3object", globs=True)
    with pytest.raises(S3Error):
        translate("select * from 'a/*.csv' join read_parquet('/etc/x') b on true", globs=True)


def test_empty_and_syntax_errors() -> None:
    with pytest.raises(S3Error) as info:
        translate("   ")
    assert info.value.code.aws_code == "MissingRequiredParameter"
    with pytest.raises(S3Error) as info:
        translate("SELEC * FROM s3object")
    assert info.value.code.aws_code in ("ParseUnexpectedToken", "UnsupportedSqlOperation")


@pytest.mark.parametrize("sql", [
    # a CTE named like a catalog view, reading that view in its own (non-recursive) body
    "with pg_settings as (select * from pg_settings) select name, setting from pg_settings",
    "with recursive pg_class as (select * from pg_class) select relname from pg_class",
    "with recursive pg_class as (select * from pg_class union all select * from pg_class) select * from pg_class",
    # a CTE name from a sibling subquery's scope, used where DuckDB resolves it in the catalog
    "select * from (with pg_class as (select 1 a) select a from pg_class) x, pg_class",
    "select (with pg_proc as (select 1) select count(*) from pg_proc), (select count(*) from pg_proc) from s3object",
    # a later CTE's name used by an earlier one
    "with a as (select * from pg_namespace), pg_namespace as (select 1) select * from a",
    # a CTE reading a file or a table function
    "with s3object as (select * from read_csv('/etc/passwd')) select * from s3object",
    "with c as (select * from '/etc/passwd') select * from c",
])
def test_issue18_cte_names_cannot_reach_the_catalog(sql: str) -> None:
    with pytest.raises(S3Error) as info:
        translate(sql)
    assert info.value.code.aws_code == "UnsupportedSqlOperation"


@pytest.mark.parametrize("sql", [
    "with a as (select * from s3object), b as (select * from a) select * from b",
    "with s3object as (select * from s3object where x > 1) select * from s3object",
    "with recursive t(n) as (select 1 union all select n + 1 from t where n < 3) select * from t, s3object",
    "select * from (with c as (select * from s3object) select * from c) x",
    "with c as (select 1 a) select (select count(*) from c) from s3object",
])
def test_issue18_scoped_ctes_still_work(sql: str) -> None:
    translate(sql)
