-- The demo workload: each \gexec line runs its generated statements as separate top-level
-- queries with different constants, as an application would.
SET work_mem = '1MB';
SELECT format('SELECT * FROM orders WHERE id = %s', g) FROM generate_series(1, 300) g \gexec
SELECT format('SELECT count(*) FROM orders WHERE status = %L', 'failed') FROM generate_series(1, 20) \gexec
SELECT format('SELECT id, country FROM customers WHERE lower(email) = %L', 'user' || g || '@example.com') FROM generate_series(1, 20) g \gexec
SELECT format('SELECT * FROM orders WHERE customer_id = %s ORDER BY created_at DESC LIMIT 10', g) FROM generate_series(1, 50) g \gexec
SELECT format('SELECT id FROM orders ORDER BY total_cents DESC, id LIMIT 5 OFFSET %s', g * 1000) FROM generate_series(1, 5) g \gexec
SELECT format('SELECT count(*) FROM events WHERE payload @> %L', '{"source": "partner"}') FROM generate_series(1, 10) \gexec
SELECT format('SELECT c.country, count(*), sum(o.total_cents) FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.created_at >= %L GROUP BY c.country ORDER BY 2 DESC', '2024-06-01') FROM generate_series(1, 5) \gexec
SELECT format('UPDATE orders SET status = %L WHERE id = %s', 'refunded', g * 13) FROM generate_series(1, 100) g \gexec
