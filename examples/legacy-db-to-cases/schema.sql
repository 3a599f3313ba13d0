-- The legacy case master, as the old system left it: a LATIN1 database (created by run.py with
-- ENCODING 'LATIN1'), abbreviated column names, one-letter and two-letter codes, dates as
-- YYYYMMDD text. lst_upd_ts is set by the database's clock on every insert and update.
CREATE TABLE IF NOT EXISTS cs_mstr (
    cs_no      integer PRIMARY KEY,
    cust_no    char(8) NOT NULL,
    cntct_nm   varchar(40),
    subj_txt   varchar(80) NOT NULL,
    desc_txt   text,
    prty_cd    char(1) NOT NULL DEFAULT '3',   -- 1 urgent, 2 high, 3 normal, 4 low
    stat_cd    char(2) NOT NULL DEFAULT 'OP',  -- OP open, PN pending, CL closed
    cat_cd     char(3),                        -- BIL billing, TEC technical, SHP shipping
    opn_dt     char(8) NOT NULL,               -- YYYYMMDD
    lst_upd_ts timestamp NOT NULL DEFAULT clock_timestamp()
);

CREATE OR REPLACE FUNCTION cs_mstr_touch() RETURNS trigger AS $$
BEGIN
    NEW.lst_upd_ts := clock_timestamp();
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS cs_mstr_touch ON cs_mstr;
CREATE TRIGGER cs_mstr_touch BEFORE UPDATE ON cs_mstr FOR EACH ROW EXECUTE FUNCTION cs_mstr_touch();
