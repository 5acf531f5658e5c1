-- Ack leased messages. ARGV: prefix, leases (tag\0token\0..., the token being the
-- delivery count). A lease that expired and went to another consumer is left alone.
return forget(held(ARGV[2]))
