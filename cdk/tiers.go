// The sizes the stack can be deployed at, and the database connection budget
// that holds at each of them.
package main

import "github.com/aws/aws-cdk-go/awscdk/v2/awsec2"

// A tier sizes the service and its database together, following the seed's
// scaling path. Pick one with `cdk deploy -c tier=small|medium|large`.
type tier struct {
	minInstances, maxInstances int

	// Per instance, in the units App Runner and Fargate both accept:
	// CPU units (1024 = 1 vCPU) and memory in MiB.
	cpu, memory string

	dbInstanceSize awsec2.InstanceSize // of the burstable Graviton class, db.t4g

	// multiAZ pays to survive the loss of an availability zone: a Multi-AZ
	// database and, on ECS Express, VPC endpoints in both zones.
	multiAZ bool

	// Pinned in the database's parameter group rather than left to the
	// default LEAST(DBInstanceClassMemory/9531392, 5000), so the budget below
	// is computed from a number we know. Each is at or under that default.
	dbMaxConnections int
}

const defaultTier = "small"

var tiers = map[string]tier{
	// 5-50 users.
	"small": {
		minInstances: 1, maxInstances: 2,
		cpu: "256", memory: "512",
		dbInstanceSize:   awsec2.InstanceSize_MICRO,
		dbMaxConnections: 80,
	},
	// 50-200 users.
	"medium": {
		minInstances: 2, maxInstances: 4,
		cpu: "512", memory: "1024",
		dbInstanceSize:   awsec2.InstanceSize_SMALL,
		dbMaxConnections: 160,
	},
	// 200-500 users.
	"large": {
		minInstances: 4, maxInstances: 8,
		cpu: "1024", memory: "2048",
		dbInstanceSize:   awsec2.InstanceSize_MEDIUM,
		multiAZ:          true,
		dbMaxConnections: 320,
	},
}

// Connections kept free for psql, migrations by hand and RDS's own use.
const reservedConnections = 10

// dbMaxConns is each instance's pool size (DB_MAX_CONNS). During a deploy the
// old and the new instances run side by side, so twice the largest fleet must
// fit in what the database allows.
func (t tier) dbMaxConns() int {
	return (t.dbMaxConnections - reservedConnections) / (2 * t.maxInstances)
}
