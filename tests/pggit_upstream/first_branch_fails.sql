-- Upstream defect first_branch_fails (applied after sound.sql, before any other branch exists).
-- Breaks: the branches id sequence is left where upstream's install leaves it ('main' inserted
-- with an explicit id = 1, the serial never advanced): the first create_branch() (or the first
-- commit_changes on a new branch) draws id 1 and fails with 23505 on branches_pkey. The failed
-- insert consumes that value, so the second attempt works.

SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence('pggit.branches', 'id'), 1, false);
