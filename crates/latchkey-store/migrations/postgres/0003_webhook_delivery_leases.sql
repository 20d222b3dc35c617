-- Leases on webhook deliveries: a dispatcher that claims a delivery owns it
-- until `locked_until` (Unix seconds), so two dispatchers never send the
-- same delivery at once. `lease` names the claim, so that an outcome
-- reported after the lease was lost (and the delivery claimed again) is
-- ignored. A dispatcher that dies mid-attempt leaves a lease that simply
-- runs out; the delivery is then claimed again.
ALTER TABLE webhook_deliveries ADD COLUMN locked_until BIGINT;
ALTER TABLE webhook_deliveries ADD COLUMN lease TEXT;

-- Deliveries of one webhook, newest first.
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries(webhook_id, seq);
