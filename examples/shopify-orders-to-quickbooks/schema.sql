-- The shop's stock in PostgreSQL: a ledger of movements (what the hub writes) and the levels
-- that follow from it (what the warehouse reads). The trigger fires on INSERT only, so a
-- redelivered movement (an upsert of the same movement_id, an UPDATE) never moves a level twice.
CREATE SCHEMA IF NOT EXISTS shop;

CREATE TABLE IF NOT EXISTS shop.inventory_levels (
    sku        text PRIMARY KEY,
    available  integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS shop.inventory_movements (
    movement_id     text PRIMARY KEY,
    sku             text NOT NULL,
    quantity_change integer NOT NULL,
    reason          text NOT NULL,
    reference       text,
    moved_at        timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION shop.apply_movement() RETURNS trigger AS $$
BEGIN
    INSERT INTO shop.inventory_levels AS l (sku, available) VALUES (NEW.sku, NEW.quantity_change)
    ON CONFLICT (sku) DO UPDATE SET available = l.available + EXCLUDED.available, updated_at = now();
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS apply_movement ON shop.inventory_movements;
CREATE TRIGGER apply_movement AFTER INSERT ON shop.inventory_movements
    FOR EACH ROW EXECUTE FUNCTION shop.apply_movement();
