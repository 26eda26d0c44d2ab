-- Sample shop schema for the pg_perf demo: customers, orders with a rare status, events
-- with a jsonb payload. Deterministic data (no random()), ~1 minute to load.
SET client_min_messages = warning;
DROP TABLE IF EXISTS events, orders, customers CASCADE;
CREATE TABLE customers (
    id         bigint PRIMARY KEY,
    email      text NOT NULL,
    country    text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE orders (
    id          bigint PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id),
    status      text NOT NULL,
    total_cents int NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE TABLE events (
    id         bigint PRIMARY KEY,
    order_id   bigint NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL
);
INSERT INTO customers
SELECT g, 'User' || g || '@Example.com', (ARRAY['de','fr','us','jp','br'])[1 + g % 5],
       timestamptz '2024-01-01' + g * interval '7 minutes'
  FROM generate_series(1, 50000) g;
INSERT INTO orders
SELECT g, 1 + (g::bigint * 7919) % 50000,
       CASE WHEN g % 500 = 0 THEN 'failed' WHEN g % 10 = 0 THEN 'refunded' ELSE 'paid' END,
       (g * 37) % 20000, timestamptz '2024-01-01' + g * interval '1 minute'
  FROM generate_series(1, 400000) g;
INSERT INTO events
SELECT g, 1 + g % 400000,
       jsonb_build_object('type', (ARRAY['view','click','buy'])[1 + g % 3], 'source',
                          CASE WHEN g % 97 = 0 THEN 'partner' ELSE 'web' END),
       timestamptz '2024-01-01' + g * interval '30 seconds'
  FROM generate_series(1, 200000) g;
-- an index a human added twice, and one nobody uses
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE INDEX orders_customer_created_idx ON orders (customer_id, created_at);
CREATE INDEX customers_country_idx ON customers (country);
VACUUM ANALYZE customers, orders, events;
