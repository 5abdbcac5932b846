-- The threat class a limit was set for, as a field: it picks the rates at each level when a limit
-- steps down, and the console shows it, without parsing it back out of the reason text.
ALTER TABLE limits ADD COLUMN IF NOT EXISTS class Enum8('benign' = 0, 'harvester' = 1, 'brute_force' = 2, 'compromised' = 3) DEFAULT 'benign';
ALTER TABLE limit_changes ADD COLUMN IF NOT EXISTS class Enum8('benign' = 0, 'harvester' = 1, 'brute_force' = 2, 'compromised' = 3) DEFAULT 'benign';
