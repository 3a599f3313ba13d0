-- The ERP's ledger of card payments (MariaDB / MySQL). One row per Stripe payment intent.
CREATE TABLE IF NOT EXISTS erp_ledger_payments (
    payment_id      VARCHAR(64) PRIMARY KEY,
    amount_minor    BIGINT NOT NULL,
    currency        CHAR(3) NOT NULL,
    customer_id     VARCHAR(64),
    memo            VARCHAR(255),
    stripe_event_id VARCHAR(64) NOT NULL,
    posted_at       TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
);
