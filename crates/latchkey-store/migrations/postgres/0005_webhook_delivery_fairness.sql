-- Fair claiming of webhook deliveries: a claim counts the attempts each
-- webhook already has in flight (deliveries under a live lease) and skips
-- the webhooks that have their share, so that one slow receiver cannot hold
-- up everyone else's deliveries. Only deliveries in flight (or whose
-- dispatcher stopped mid-attempt) carry a lease, so this index stays small.
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries(webhook_id, locked_until)
    WHERE locked_until IS NOT NULL;
