package postgres

// RecordLastUsedSQL is the statement RecordLastUsed runs, for the plan test.
const RecordLastUsedSQL = recordLastUsedSQL
