-- Return expired leases, and Celery's unacked entries older than ARGV[2] seconds
-- (0: leave them to Celery), to their queues. ARGV: prefix, foreign timeout.
return sweep(now(), tonumber(ARGV[2]))
