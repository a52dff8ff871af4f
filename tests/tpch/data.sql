-- Small, deterministic TPC-H tables for the pass-through corpus (scale factor 0.01).
-- The tpch extension cannot be installed offline, so the data is generated here with
-- plain DuckDB SQL: hash() of the row number stands in for dbgen's random streams, and
-- the key formulas (partsupp suppliers, customers without orders) follow the TPC-H
-- specification so that every join in q01..q22 finds partners.
CREATE OR REPLACE TEMP MACRO tpch_u(i, salt) AS (hash(i * 1009 + salt) % 1000003) / 1000003.0;
CREATE OR REPLACE TEMP MACRO tpch_pick(i, salt, choices) AS
    choices[1 + CAST(floor(tpch_u(i, salt) * len(choices)) AS INTEGER)];
CREATE OR REPLACE TEMP MACRO tpch_money(i, salt, lo, hi) AS
    CAST(round(lo + tpch_u(i, salt) * (hi - lo), 2) AS DECIMAL(15, 2));

CREATE TABLE region AS
SELECT CAST(r_regionkey AS INTEGER) AS r_regionkey, r_name, 'region ' || r_name AS r_comment
FROM (VALUES (0, 'AFRICA'), (1, 'AMERICA'), (2, 'ASIA'), (3, 'EUROPE'), (4, 'MIDDLE EAST'))
    AS t(r_regionkey, r_name);

CREATE TABLE nation AS
SELECT CAST(n_nationkey AS INTEGER) AS n_nationkey, n_name,
       CAST(n_regionkey AS INTEGER) AS n_regionkey, 'nation ' || n_name AS n_comment
FROM (VALUES
    (0, 'ALGERIA', 0), (1, 'ARGENTINA', 1), (2, 'BRAZIL', 1), (3, 'CANADA', 1),
    (4, 'EGYPT', 4), (5, 'ETHIOPIA', 0), (6, 'FRANCE', 3), (7, 'GERMANY', 3),
    (8, 'INDIA', 2), (9, 'INDONESIA', 2), (10, 'IRAN', 4), (11, 'IRAQ', 4),
    (12, 'JAPAN', 2), (13, 'JORDAN', 4), (14, 'KENYA', 0), (15, 'MOROCCO', 0),
    (16, 'MOZAMBIQUE', 0), (17, 'PERU', 1), (18, 'CHINA', 2), (19, 'ROMANIA', 3),
    (20, 'SAUDI ARABIA', 4), (21, 'VIETNAM', 2), (22, 'RUSSIA', 3),
    (23, 'UNITED KINGDOM', 3), (24, 'UNITED STATES', 1)
) AS t(n_nationkey, n_name, n_regionkey);

-- 100 suppliers, every nation present; every 20th one has a complaints comment (q16).
CREATE TABLE supplier AS
SELECT s_suppkey,
       'Supplier#' || lpad(CAST(s_suppkey AS VARCHAR), 9, '0') AS s_name,
       'Address of supplier ' || s_suppkey AS s_address,
       s_nationkey,
       CAST(s_nationkey + 10 AS VARCHAR) || '-' || CAST(100 + s_suppkey % 900 AS VARCHAR)
           || '-555-' || lpad(CAST(s_suppkey AS VARCHAR), 4, '0') AS s_phone,
       tpch_money(s_suppkey, 2, -999.99, 9999.99) AS s_acctbal,
       CASE WHEN s_suppkey % 20 = 7 THEN 'slyly final Customer requests; Complaints noted'
            ELSE 'carefully regular deposits' END AS s_comment
FROM (SELECT CAST(i AS INTEGER) AS s_suppkey, CAST((i * 7) % 25 AS INTEGER) AS s_nationkey
      FROM range(1, 101) AS r(i));

CREATE TABLE part AS
WITH words AS (
    SELECT ['almond', 'antique', 'aquamarine', 'azure', 'beige', 'black', 'blue', 'blush',
            'brown', 'burlywood', 'chartreuse', 'chocolate', 'coral', 'cornflower', 'cream',
            'forest', 'green', 'honeydew', 'ivory', 'khaki', 'lavender', 'lemon', 'linen',
            'magenta', 'maroon', 'navy', 'olive', 'orange', 'peru', 'plum', 'red', 'rose',
            'salmon', 'sienna', 'smoke', 'snow', 'tan', 'thistle', 'tomato', 'violet',
            'white', 'yellow'] AS colors
), base AS (
    SELECT CAST(i AS INTEGER) AS p_partkey,
           1 + CAST(floor(tpch_u(i, 6) * 5) AS INTEGER) AS m,
           1 + CAST(floor(tpch_u(i, 7) * 5) AS INTEGER) AS n
    FROM range(1, 2001) AS r(i)
)
SELECT p_partkey,
       tpch_pick(p_partkey, 1, colors) || ' ' || tpch_pick(p_partkey, 2, colors) || ' '
           || tpch_pick(p_partkey, 3, colors) || ' ' || tpch_pick(p_partkey, 4, colors) || ' '
           || tpch_pick(p_partkey, 5, colors) AS p_name,
       'Manufacturer#' || m AS p_mfgr,
       'Brand#' || m || n AS p_brand,
       tpch_pick(p_partkey, 8, ['STANDARD', 'SMALL', 'MEDIUM', 'LARGE', 'ECONOMY', 'PROMO'])
           || ' ' || tpch_pick(p_partkey, 9, ['ANODIZED', 'BURNISHED', 'PLATED', 'POLISHED', 'BRUSHED'])
           || ' ' || tpch_pick(p_partkey, 10, ['TIN', 'NICKEL', 'BRASS', 'STEEL', 'COPPER']) AS p_type,
       1 + CAST(floor(tpch_u(p_partkey, 11) * 50) AS INTEGER) AS p_size,
       tpch_pick(p_partkey, 12, ['SM', 'LG', 'MED', 'JUMBO', 'WRAP']) || ' '
           || tpch_pick(p_partkey, 13, ['CASE', 'BOX', 'BAG', 'JAR', 'PKG', 'PACK', 'CAN', 'DRUM'])
           AS p_container,
       CAST((90000 + (p_partkey // 10) % 20001 + 100 * (p_partkey % 1000)) / 100 AS DECIMAL(15, 2))
           AS p_retailprice,
       'part comment' AS p_comment
FROM base, words;

-- Four suppliers per part, with the specification's formula.
CREATE TABLE partsupp AS
SELECT p_partkey AS ps_partkey,
       CAST((p_partkey + j * (25 + (p_partkey - 1) // 100)) % 100 + 1 AS INTEGER) AS ps_suppkey,
       CAST(1 + floor(tpch_u(p_partkey * 4 + j, 14) * 9999) AS INTEGER) AS ps_availqty,
       tpch_money(p_partkey * 4 + j, 15, 1.00, 1000.00) AS ps_supplycost,
       'partsupp comment' AS ps_comment
FROM part, range(4) AS r(j);

CREATE TABLE customer AS
SELECT c_custkey,
       'Customer#' || lpad(CAST(c_custkey AS VARCHAR), 9, '0') AS c_name,
       'Address of customer ' || c_custkey AS c_address,
       c_nationkey,
       CAST(c_nationkey + 10 AS VARCHAR) || '-' || CAST(100 + c_custkey % 900 AS VARCHAR)
           || '-555-' || lpad(CAST(c_custkey % 10000 AS VARCHAR), 4, '0') AS c_phone,
       tpch_money(c_custkey, 17, -999.99, 9999.99) AS c_acctbal,
       tpch_pick(c_custkey, 18, ['AUTOMOBILE', 'BUILDING', 'FURNITURE', 'HOUSEHOLD', 'MACHINERY'])
           AS c_mktsegment,
       'customer comment' AS c_comment
FROM (SELECT CAST(i AS INTEGER) AS c_custkey, CAST(floor(tpch_u(i, 16) * 25) AS INTEGER) AS c_nationkey
      FROM range(1, 1501) AS r(i));

-- Customers whose key is a multiple of 3 place no orders (q13, q22).
CREATE TEMP TABLE orders_base AS
SELECT o_orderkey,
       CAST(CASE WHEN k % 3 = 0 THEN k - 1 ELSE k END AS INTEGER) AS o_custkey,
       DATE '1992-01-01' + CAST(floor(tpch_u(o_orderkey, 21) * 2405) AS INTEGER) AS o_orderdate,
       tpch_pick(o_orderkey, 22, ['1-URGENT', '2-HIGH', '3-MEDIUM', '4-NOT SPECIFIED', '5-LOW'])
           AS o_orderpriority,
       'Clerk#' || lpad(CAST(1 + o_orderkey % 10 AS VARCHAR), 9, '0') AS o_clerk,
       0 AS o_shippriority,
       CASE WHEN o_orderkey % 10 = 3 THEN 'pending special foxes; requests sleep'
            ELSE 'regular deposits' END AS o_comment,
       1 + CAST(floor(tpch_u(o_orderkey, 23) * 7) AS INTEGER) AS n_lines
FROM (SELECT CAST(i AS INTEGER) AS o_orderkey, 1 + CAST(floor(tpch_u(i, 20) * 1500) AS INTEGER) AS k
      FROM range(1, 15001) AS r(i));

CREATE TABLE lineitem AS
WITH lines AS (
    SELECT o.o_orderkey AS l_orderkey,
           CAST(j + 1 AS INTEGER) AS l_linenumber,
           o.o_orderkey * 8 + j AS seed,
           1 + CAST(floor(tpch_u(o.o_orderkey * 8 + j, 30) * 2000) AS INTEGER) AS l_partkey,
           CAST(floor(tpch_u(o.o_orderkey * 8 + j, 31) * 4) AS INTEGER) AS supplier_slot,
           o.o_orderdate + 1 + CAST(floor(tpch_u(o.o_orderkey * 8 + j, 32) * 121) AS INTEGER) AS l_shipdate,
           o.o_orderdate + 30 + CAST(floor(tpch_u(o.o_orderkey * 8 + j, 33) * 61) AS INTEGER) AS l_commitdate
    FROM orders_base AS o, range(7) AS r(j)
    WHERE j < o.n_lines
), dated AS (
    SELECT *, l_shipdate + 1 + CAST(floor(tpch_u(seed, 34) * 30) AS INTEGER) AS l_receiptdate
    FROM lines
)
SELECT l_orderkey, l_partkey,
       CAST((l_partkey + supplier_slot * (25 + (l_partkey - 1) // 100)) % 100 + 1 AS INTEGER) AS l_suppkey,
       l_linenumber,
       CAST(1 + floor(tpch_u(seed, 35) * 50) AS DECIMAL(15, 2)) AS l_quantity,
       CAST((1 + floor(tpch_u(seed, 35) * 50)) * p_retailprice AS DECIMAL(15, 2)) AS l_extendedprice,
       CAST(floor(tpch_u(seed, 36) * 11) / 100 AS DECIMAL(15, 2)) AS l_discount,
       CAST(floor(tpch_u(seed, 37) * 9) / 100 AS DECIMAL(15, 2)) AS l_tax,
       CASE WHEN l_receiptdate > DATE '1995-06-17' THEN 'N'
            WHEN tpch_u(seed, 38) < 0.5 THEN 'R' ELSE 'A' END AS l_returnflag,
       CASE WHEN l_shipdate > DATE '1995-06-17' THEN 'O' ELSE 'F' END AS l_linestatus,
       l_shipdate, l_commitdate, l_receiptdate,
       tpch_pick(seed, 39, ['DELIVER IN PERSON', 'COLLECT COD', 'NONE', 'TAKE BACK RETURN'])
           AS l_shipinstruct,
       tpch_pick(seed, 40, ['REG AIR', 'AIR', 'RAIL', 'SHIP', 'TRUCK', 'MAIL', 'FOB']) AS l_shipmode,
       'lineitem comment' AS l_comment
FROM dated JOIN part ON p_partkey = l_partkey;

CREATE TABLE orders AS
SELECT o.o_orderkey, o.o_custkey,
       CASE WHEN bool_and(l.l_linestatus = 'F') THEN 'F'
            WHEN bool_and(l.l_linestatus = 'O') THEN 'O' ELSE 'P' END AS o_orderstatus,
       CAST(sum(l.l_extendedprice * (1 + l.l_tax) * (1 - l.l_discount)) AS DECIMAL(15, 2))
           AS o_totalprice,
       o.o_orderdate, o.o_orderpriority, o.o_clerk, o.o_shippriority, o.o_comment
FROM orders_base AS o JOIN lineitem AS l ON l.l_orderkey = o.o_orderkey
GROUP BY o.o_orderkey, o.o_custkey, o.o_orderdate, o.o_orderpriority, o.o_clerk,
         o.o_shippriority, o.o_comment;

DROP TABLE orders_base;
