// The CDK app that deploys Conduit: a VPC, PostgreSQL 16 on RDS, the secrets,
// the container image, and the service that runs it. `cdk deploy` runs main.
package main

import (
	"cmp"
	"fmt"
	"strconv"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsecrassets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsrds"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssecretsmanager"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

type ConduitStackProps struct {
	awscdk.StackProps
	Tier    string // a key of tiers; empty means defaultTier
	Compute string // computeAppRunner (the default when empty) or computeECSExpress
	// NATGateway gives the service a route to the internet, for code that
	// must call out. Conduit calls nothing outside the VPC, so it is off.
	NATGateway bool
}

// The computes that can run the service. App Runner is the maintainer's
// choice; it has taken no new customers since 30 April 2026, and AWS points
// those to ECS Express Mode.
const (
	computeAppRunner  = "apprunner"
	computeECSExpress = "ecs-express"
)

const (
	databaseName = "conduit"
	databaseUser = "conduit"
	databasePort = 5432
	// Where the Dockerfile puts the RDS CA bundle.
	rdsCABundlePath = "/etc/ssl/certs/rds-global-bundle.pem"
)

func NewConduitStack(scope constructs.Construct, id string, props *ConduitStackProps) awscdk.Stack {
	if props == nil {
		props = &ConduitStackProps{}
	}
	sprops := props.StackProps
	tierName := cmp.Or(props.Tier, defaultTier)
	t, ok := tiers[tierName]
	if !ok {
		panic(fmt.Sprintf("unknown tier %q: want small, medium or large", tierName))
	}
	compute := cmp.Or(props.Compute, computeAppRunner)
	if compute != computeAppRunner && compute != computeECSExpress {
		panic(fmt.Sprintf("unknown compute %q: want %s or %s", compute, computeAppRunner, computeECSExpress))
	}
	if compute == computeECSExpress && props.NATGateway {
		panic("nat=true does not apply to compute=ecs-express: its tasks sit in public subnets, which route to the internet gateway, not a NAT gateway")
	}
	if sprops.Description == nil {
		sprops.Description = jsii.String("Conduit (RealWorld API) on " + compute + " and RDS PostgreSQL 16, tier " + tierName)
	}
	stack := awscdk.NewStack(scope, &id, &sprops)

	// Isolated subnets come first so that turning NAT on, or switching the
	// compute, appends subnets without moving the database's.
	subnets := []*awsec2.SubnetConfiguration{{
		Name:       jsii.String("Isolated"),
		SubnetType: awsec2.SubnetType_PRIVATE_ISOLATED,
		CidrMask:   jsii.Number(24),
	}}
	// App Runner reaches the VPC through a connector in isolated subnets:
	// nothing there needs a way out.
	serviceSubnets := awsec2.SubnetType_PRIVATE_ISOLATED
	natGateways := 0
	switch {
	case compute == computeECSExpress:
		// Express Mode's load balancer is internet-facing only in public
		// subnets, and its tasks share them (see ecsexpress.go).
		subnets = append(subnets, &awsec2.SubnetConfiguration{
			Name:                jsii.String("Public"),
			SubnetType:          awsec2.SubnetType_PUBLIC,
			CidrMask:            jsii.Number(24),
			MapPublicIpOnLaunch: jsii.Bool(false),
		})
		serviceSubnets = awsec2.SubnetType_PUBLIC
	case props.NATGateway:
		subnets = append(subnets,
			&awsec2.SubnetConfiguration{
				Name:                jsii.String("Public"),
				SubnetType:          awsec2.SubnetType_PUBLIC,
				CidrMask:            jsii.Number(24),
				MapPublicIpOnLaunch: jsii.Bool(false), // only the NAT gateway lives here
			},
			&awsec2.SubnetConfiguration{
				Name:       jsii.String("Private"),
				SubnetType: awsec2.SubnetType_PRIVATE_WITH_EGRESS,
				CidrMask:   jsii.Number(24),
			})
		serviceSubnets = awsec2.SubnetType_PRIVATE_WITH_EGRESS
		// One gateway, not one per AZ: it is a way out, not a path users wait on.
		natGateways = 1
	}
	flowLogs := awslogs.NewLogGroup(stack, jsii.String("VpcFlowLogs"), &awslogs.LogGroupProps{
		Retention:     awslogs.RetentionDays_ONE_MONTH,
		RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	vpc := awsec2.NewVpc(stack, jsii.String("Vpc"), &awsec2.VpcProps{
		// Without an env the stack synthesizes with no AWS account, and the
		// two AZs are picked at deploy time.
		MaxAzs:              jsii.Number(2),
		NatGateways:         jsii.Number(float64(natGateways)),
		SubnetConfiguration: &subnets,
		FlowLogs: &map[string]*awsec2.FlowLogOptions{
			// What the network refused, to debug a security group.
			"Rejected": {
				Destination: awsec2.FlowLogDestination_ToCloudWatchLogs(flowLogs, nil),
				TrafficType: awsec2.FlowLogTrafficType_REJECT,
			},
		},
	})

	// The secret outlives the stack: a snapshot restored after `cdk destroy`
	// still has this password.
	dbSecret := awsrds.NewDatabaseSecret(stack, jsii.String("DatabaseSecret"), &awsrds.DatabaseSecretProps{
		Username: jsii.String(databaseUser),
	})
	dbSecret.ApplyRemovalPolicy(awscdk.RemovalPolicy_RETAIN)
	postgres16 := awsrds.DatabaseInstanceEngine_Postgres(&awsrds.PostgresInstanceEngineProps{
		Version: awsrds.PostgresEngineVersion_VER_16(),
	})
	db := awsrds.NewDatabaseInstance(stack, jsii.String("Database"), &awsrds.DatabaseInstanceProps{
		Engine:       postgres16,
		InstanceType: awsec2.InstanceType_Of(awsec2.InstanceClass_BURSTABLE4_GRAVITON, t.dbInstanceSize),
		MultiAz:      jsii.Bool(t.multiAZ),
		Parameters: &map[string]*string{
			"max_connections": jsii.String(strconv.Itoa(t.dbMaxConnections)),
		},
		Vpc:                 vpc,
		VpcSubnets:          &awsec2.SubnetSelection{SubnetType: awsec2.SubnetType_PRIVATE_ISOLATED},
		PubliclyAccessible:  jsii.Bool(false),
		Port:                jsii.Number(databasePort),
		Credentials:         awsrds.Credentials_FromSecret(dbSecret, nil),
		DatabaseName:        jsii.String(databaseName),
		StorageType:         awsrds.StorageType_GP3,
		AllocatedStorage:    jsii.Number(20),
		MaxAllocatedStorage: jsii.Number(100),
		StorageEncrypted:    jsii.Bool(true),
		BackupRetention:     awscdk.Duration_Days(jsii.Number(7)),
		DeletionProtection:  jsii.Bool(true),
		RemovalPolicy:       awscdk.RemovalPolicy_SNAPSHOT,
	})

	jwtSecret := awssecretsmanager.NewSecret(stack, jsii.String("JwtSecret"), &awssecretsmanager.SecretProps{
		Description: jsii.String("Signs Conduit's JWTs"),
		GenerateSecretString: &awssecretsmanager.SecretStringGenerator{
			PasswordLength:     jsii.Number(64),
			ExcludePunctuation: jsii.Bool(true),
		},
	})

	image := awsecrassets.NewDockerImageAsset(stack, jsii.String("Image"), &awsecrassets.DockerImageAssetProps{
		Directory: jsii.String(".."), // the repo root, with its Dockerfile and .dockerignore
		Platform:  awsecrassets.Platform_LINUX_AMD64(),
	})

	// PORT is left to its default, 8080, the port each compute sends traffic to.
	svc := service{
		vpc:     vpc,
		subnets: &awsec2.SubnetSelection{SubnetType: serviceSubnets},
		image:   image,
		tier:    t,
		environment: []nameValue{
			{"DB_HOST", db.DbInstanceEndpointAddress()},
			{"DB_PORT", jsii.String(strconv.Itoa(databasePort))},
			{"DB_NAME", jsii.String(databaseName)},
			{"DB_SSLMODE", jsii.String("verify-full")},
			{"DB_SSLROOTCERT", jsii.String(rdsCABundlePath)},
			{"DB_MAX_CONNS", jsii.String(strconv.Itoa(t.dbMaxConns()))},
			// Both computes put one proxy in front (App Runner's, or the
			// load balancer) that appends the client's address to
			// X-Forwarded-For; the login rate limit keys on that entry.
			{"TRUSTED_PROXY_HOPS", jsii.String("1")},
		},
		secrets: []nameValue{
			{"DB_USER", jsonKey(dbSecret, "username")},
			{"DB_PASSWORD", jsonKey(dbSecret, "password")},
			{"JWT_SECRET", jwtSecret.SecretArn()},
		},
		secretARNs: []*string{dbSecret.SecretArn(), jwtSecret.SecretArn()},
	}
	// The one place that decides which compute runs the service.
	var url *string
	var serviceSG awsec2.ISecurityGroup
	switch compute {
	case computeAppRunner:
		url, serviceSG = newAppRunnerService(stack, svc)
	case computeECSExpress:
		url, serviceSG = newECSExpressService(stack, svc)
	}
	// From the service's group only, never from an address range.
	db.Connections().AllowFrom(serviceSG, awsec2.Port_Tcp(jsii.Number(databasePort)), jsii.String("Conduit service"))

	awscdk.NewCfnOutput(stack, jsii.String("ServiceUrl"), &awscdk.CfnOutputProps{Value: url})
	awscdk.NewCfnOutput(stack, jsii.String("DatabaseEndpoint"), &awscdk.CfnOutputProps{Value: db.DbInstanceEndpointAddress()})
	awscdk.NewCfnOutput(stack, jsii.String("DatabaseSecretArn"), &awscdk.CfnOutputProps{Value: dbSecret.SecretArn()})
	return stack
}

// service is what any compute needs to run Conduit.
type service struct {
	vpc         awsec2.IVpc
	subnets     *awsec2.SubnetSelection
	image       awsecrassets.DockerImageAsset
	tier        tier
	environment []nameValue // plain settings
	secrets     []nameValue // environment variables read from Secrets Manager
	secretARNs  []*string   // the secrets the service may read, and no others
}

// A slice rather than a map keeps the template's order stable between synths.
type nameValue struct {
	name  string
	value *string
}

// jsonKey references one JSON key of a secret, in the form App Runner and ECS
// both accept: <arn>:<json-key>:<version-stage>:<version-id>, latest version.
func jsonKey(secret awssecretsmanager.ISecret, key string) *string {
	return jsii.String(*secret.SecretArn() + ":" + key + "::")
}

func main() {
	defer jsii.Close()

	app := awscdk.NewApp(nil)

	NewConduitStack(app, "Conduit", &ConduitStackProps{
		Tier:       contextString(app, "tier"),
		Compute:    contextString(app, "compute"),
		NATGateway: contextString(app, "nat") == "true",
	})

	app.Synth(nil)
}

// contextString reads a value given as `cdk deploy -c name=value`.
func contextString(app awscdk.App, name string) string {
	v := app.Node().TryGetContext(jsii.String(name))
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}
