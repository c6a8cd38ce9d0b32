// Synth-time tests: nothing can be deployed from here, so each property the
// deploy relies on is read from the CloudFormation template the stack
// synthesizes. Values are compared as compact JSON, e.g. `{"Ref":"X"}`.
package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
)

var computes = []string{computeAppRunner, computeECSExpress}

func TestResourceCounts(t *testing.T) {
	for _, c := range []struct {
		typ                  string
		appRunner, ecsExpess int
	}{
		{"AWS::EC2::VPC", 1, 1},
		{"AWS::EC2::Subnet", 2, 4}, // isolated, plus public for ECS Express; one per AZ
		{"AWS::EC2::NatGateway", 0, 0},
		{"AWS::EC2::InternetGateway", 0, 1},
		{"AWS::EC2::FlowLog", 1, 1},
		{"AWS::EC2::VPCEndpoint", 0, 5},
		{"AWS::RDS::DBInstance", 1, 1},
		{"AWS::SecretsManager::Secret", 2, 2},
		{"AWS::AppRunner::Service", 1, 0},
		{"AWS::AppRunner::VpcConnector", 1, 0},
		{"AWS::AppRunner::AutoScalingConfiguration", 1, 0},
		{"AWS::ECS::ExpressGatewayService", 0, 1},
	} {
		for compute, want := range map[string]int{computeAppRunner: c.appRunner, computeECSExpress: c.ecsExpess} {
			tmpl := synth(t, ConduitStackProps{Compute: compute})
			if got := len(tmpl.ofType(c.typ)); got != want {
				t.Errorf("%s: %s count = %d, want %d", compute, c.typ, got, want)
			}
		}
	}
}

func TestVPCHasTwoAZsAndNoNATByDefault(t *testing.T) {
	tmpl := synth(t, ConduitStackProps{})
	azs := map[string]bool{}
	for id, s := range tmpl.ofType("AWS::EC2::Subnet") {
		azs[js(s.Properties["AvailabilityZone"])] = true
		if got := js(s.Properties["MapPublicIpOnLaunch"]); got != "false" {
			t.Errorf("subnet %s MapPublicIpOnLaunch = %s, want false", id, got)
		}
	}
	if len(azs) != 2 {
		t.Errorf("subnets span %d AZs, want 2", len(azs))
	}
	for id, r := range tmpl.ofType("AWS::EC2::Route") {
		t.Errorf("route %s: %s, want no route out of the VPC", id, js(r.Properties))
	}
}

// Turning NAT on or switching the compute adds subnets; the database's must
// keep their address ranges, or CloudFormation would replace them under it.
func TestDatabaseSubnetsStayPut(t *testing.T) {
	isolated := func(tmpl *template) string {
		var cidrs []string
		for id, s := range tmpl.ofType("AWS::EC2::Subnet") {
			if strings.Contains(id, "Isolated") {
				cidrs = append(cidrs, js(s.Properties["CidrBlock"]))
			}
		}
		slices.Sort(cidrs)
		return strings.Join(cidrs, " ")
	}
	want := isolated(synth(t, ConduitStackProps{}))
	for _, props := range []ConduitStackProps{{NATGateway: true}, {Compute: computeECSExpress}} {
		tmpl := synth(t, props)
		if got := isolated(tmpl); got != want {
			t.Errorf("%s: isolated subnets = %s, want %s as by default", settings(props), got, want)
		}
		_, subnetGroup := tmpl.only(t, "AWS::RDS::DBSubnetGroup")
		for _, subnet := range subnetGroup.Properties["SubnetIds"].([]any) {
			if id := refID(subnet); !strings.Contains(id, "Isolated") {
				t.Errorf("%s: database subnet = %s, want an isolated subnet", settings(props), id)
			}
		}
	}
}

func TestNATSwitch(t *testing.T) {
	tmpl := synth(t, ConduitStackProps{NATGateway: true})
	if got := len(tmpl.ofType("AWS::EC2::NatGateway")); got != 1 {
		t.Errorf("NAT gateways with nat=true = %d, want 1", got)
	}
	_, connector := tmpl.only(t, "AWS::AppRunner::VpcConnector")
	for _, subnet := range connector.Properties["Subnets"].([]any) {
		if id := refID(subnet); !strings.Contains(id, "Private") {
			t.Errorf("with NAT, VPC connector subnet = %s, want a private subnet with egress", id)
		}
	}
}

func TestFlowLogsKeepRejectedTraffic(t *testing.T) {
	tmpl := synth(t, ConduitStackProps{})
	_, flowLog := tmpl.only(t, "AWS::EC2::FlowLog")
	if got := js(flowLog.Properties["TrafficType"]); got != `"REJECT"` && got != `"ALL"` {
		t.Errorf("flow log TrafficType = %s, want REJECT or ALL", got)
	}
	if got := js(flowLog.Properties["LogDestinationType"]); got != `"cloud-watch-logs"` {
		t.Errorf("flow log LogDestinationType = %s, want cloud-watch-logs", got)
	}
	logGroup := tmpl.Resources[refID(flowLog.Properties["LogGroupName"])]
	if _, ok := logGroup.Properties["RetentionInDays"]; !ok {
		t.Errorf("flow log group %s has no RetentionInDays", js(logGroup.Properties))
	}
}

func TestDatabase(t *testing.T) {
	tmpl := synth(t, ConduitStackProps{})
	_, db := tmpl.only(t, "AWS::RDS::DBInstance")
	for _, c := range []struct{ field, want string }{
		{"Engine", `"postgres"`},
		{"EngineVersion", `"16"`},
		{"DBInstanceClass", `"db.t4g.micro"`},
		{"StorageType", `"gp3"`},
		{"AllocatedStorage", `"20"`},
		{"MaxAllocatedStorage", `100`},
		{"StorageEncrypted", `true`},
		{"PubliclyAccessible", `false`},
		{"BackupRetentionPeriod", `7`},
		{"DeletionProtection", `true`},
		{"MultiAZ", `false`},
		{"Port", `"5432"`},
	} {
		if got := js(db.Properties[c.field]); got != c.want {
			t.Errorf("DBInstance %s = %s, want %s", c.field, got, c.want)
		}
	}
	if db.DeletionPolicy != "Snapshot" || db.UpdateReplacePolicy != "Snapshot" {
		t.Errorf("DBInstance DeletionPolicy, UpdateReplacePolicy = %s, %s, want Snapshot, Snapshot",
			db.DeletionPolicy, db.UpdateReplacePolicy)
	}

	// Credentials come from the generated secret, never a literal.
	dbSecretID := tmpl.dbSecretID(t)
	for _, field := range []string{"MasterUsername", "MasterUserPassword"} {
		got := js(db.Properties[field])
		if !strings.Contains(got, `{{resolve:secretsmanager:`) || !strings.Contains(got, `{"Ref":"`+dbSecretID+`"}`) {
			t.Errorf("DBInstance %s = %s, want a dynamic reference to %s", field, got, dbSecretID)
		}
	}
	if got := tmpl.Resources[dbSecretID].DeletionPolicy; got != "Retain" {
		t.Errorf("database secret DeletionPolicy = %q, want Retain: a restored snapshot needs its password", got)
	}
}

func TestDatabaseAdmitsOnlyTheService(t *testing.T) {
	for _, compute := range computes {
		t.Run(compute, func(t *testing.T) {
			tmpl := synth(t, ConduitStackProps{Compute: compute})
			_, db := tmpl.only(t, "AWS::RDS::DBInstance")
			dbSG := db.Properties["VPCSecurityGroups"].([]any)
			if len(dbSG) != 1 {
				t.Fatalf("DBInstance VPCSecurityGroups = %s, want one group", js(dbSG))
			}
			rules := tmpl.ingressInto(dbSG[0])
			if len(rules) != 1 {
				t.Fatalf("database security group ingress = %s, want 1 rule", js(rules))
			}
			for _, c := range []struct{ field, want string }{
				{"IpProtocol", `"tcp"`},
				{"FromPort", `5432`},
				{"ToPort", `5432`},
				{"SourceSecurityGroupId", js(deployedService(t, tmpl).securityGroup)},
				{"CidrIp", `null`},
				{"CidrIpv6", `null`},
			} {
				if got := js(rules[0][c.field]); got != c.want {
					t.Errorf("database ingress %s = %s, want %s", c.field, got, c.want)
				}
			}
		})
	}
}

func TestSecrets(t *testing.T) {
	tmpl := synth(t, ConduitStackProps{})
	jwt := tmpl.Resources[tmpl.jwtSecretID(t)]
	gen, _ := jwt.Properties["GenerateSecretString"].(map[string]any)
	if n, _ := gen["PasswordLength"].(float64); n < 32 {
		t.Errorf("JWT secret GenerateSecretString = %s, want at least 32 characters", js(gen))
	}
	if _, ok := jwt.Properties["SecretString"]; ok {
		t.Errorf("JWT secret has a literal SecretString, want a generated one")
	}
}

// Both computes pass the service the same settings, and its secrets only as
// references to Secrets Manager, never in plain text.
func TestServiceEnvironment(t *testing.T) {
	for _, compute := range computes {
		t.Run(compute, func(t *testing.T) {
			tmpl := synth(t, ConduitStackProps{Compute: compute})
			dbID, _ := tmpl.only(t, "AWS::RDS::DBInstance")
			dbSecret, jwtSecret := tmpl.dbSecretID(t), tmpl.jwtSecretID(t)
			svc := deployedService(t, tmpl)

			checkPairs(t, "environment", svc.environment, map[string]string{
				"DB_HOST":            `{"Fn::GetAtt":["` + dbID + `","Endpoint.Address"]}`,
				"DB_PORT":            `"5432"`,
				"DB_NAME":            `"conduit"`,
				"DB_SSLMODE":         `"verify-full"`,
				"DB_SSLROOTCERT":     `"` + rdsCABundlePath + `"`,
				"DB_MAX_CONNS":       `"17"`,
				"TRUSTED_PROXY_HOPS": `"1"`,
			})
			checkPairs(t, "secrets", svc.secrets, map[string]string{
				"DB_USER":     `{"Fn::Join":["",[{"Ref":"` + dbSecret + `"},":username::"]]}`,
				"DB_PASSWORD": `{"Fn::Join":["",[{"Ref":"` + dbSecret + `"},":password::"]]}`,
				"JWT_SECRET":  `{"Ref":"` + jwtSecret + `"}`,
			})
		})
	}
}

func TestOutputs(t *testing.T) {
	for compute, urlAttribute := range map[string]string{
		computeAppRunner:  "ServiceUrl",
		computeECSExpress: "Endpoint",
	} {
		t.Run(compute, func(t *testing.T) {
			tmpl := synth(t, ConduitStackProps{Compute: compute})
			svc := deployedService(t, tmpl)
			dbID, _ := tmpl.only(t, "AWS::RDS::DBInstance")
			for name, want := range map[string]string{
				"ServiceUrl":        `{"Fn::Join":["",["https://",{"Fn::GetAtt":["` + svc.id + `","` + urlAttribute + `"]}]]}`,
				"DatabaseEndpoint":  `{"Fn::GetAtt":["` + dbID + `","Endpoint.Address"]}`,
				"DatabaseSecretArn": `{"Ref":"` + tmpl.dbSecretID(t) + `"}`,
			} {
				if got := js(tmpl.Outputs[name].Value); got != want {
					t.Errorf("output %s = %s, want %s", name, got, want)
				}
			}
		})
	}
}

func TestTiers(t *testing.T) {
	for _, c := range []struct {
		tier                 string
		minSize, maxSize     int
		cpu, memory, dbClass string
		multiAZ              bool
	}{
		{"small", 1, 2, "256", "512", "db.t4g.micro", false},
		{"medium", 2, 4, "512", "1024", "db.t4g.small", false},
		{"large", 4, 8, "1024", "2048", "db.t4g.medium", true},
	} {
		for _, compute := range computes {
			t.Run(c.tier+"/"+compute, func(t *testing.T) {
				tmpl := synth(t, ConduitStackProps{Tier: c.tier, Compute: compute})
				svc := deployedService(t, tmpl)
				_, db := tmpl.only(t, "AWS::RDS::DBInstance")
				for _, f := range []struct {
					what string
					got  any
					want string
				}{
					{"min instances", svc.minSize, strconv.Itoa(c.minSize)},
					{"max instances", svc.maxSize, strconv.Itoa(c.maxSize)},
					{"CPU", svc.cpu, strconv.Quote(c.cpu)},
					{"memory", svc.memory, strconv.Quote(c.memory)},
					{"DBInstanceClass", db.Properties["DBInstanceClass"], strconv.Quote(c.dbClass)},
					{"MultiAZ", db.Properties["MultiAZ"], strconv.FormatBool(c.multiAZ)},
				} {
					if got := js(f.got); got != f.want {
						t.Errorf("%s = %s, want %s", f.what, got, f.want)
					}
				}
				checkConnectionBudget(t, tmpl, svc)
			})
		}
	}
}

// checkConnectionBudget checks that the largest fleet, twice over while a
// deploy overlaps old and new instances, fits in the database's pinned
// max_connections with reservedConnections to spare.
func checkConnectionBudget(t *testing.T, tmpl *template, svc deployed) {
	t.Helper()
	_, db := tmpl.only(t, "AWS::RDS::DBInstance")
	params := tmpl.Resources[refID(db.Properties["DBParameterGroupName"])]
	maxConnections := atoi(t, js(at(params.Properties, "Parameters", "max_connections")))
	fleet := atoi(t, js(svc.maxSize))
	poolSize := atoi(t, svc.environment["DB_MAX_CONNS"])

	if poolSize < 5 {
		t.Errorf("DB_MAX_CONNS = %d, want at least 5 for a useful pool", poolSize)
	}
	if used, limit := fleet*poolSize*2, maxConnections-reservedConnections; used > limit {
		t.Errorf("%d instances x DB_MAX_CONNS %d x 2 = %d, want at most max_connections %d - %d = %d",
			fleet, poolSize, used, maxConnections, reservedConnections, limit)
	}
}

func TestAppRunnerService(t *testing.T) {
	tmpl := synth(t, ConduitStackProps{})
	_, svc := tmpl.only(t, "AWS::AppRunner::Service")
	p := svc.Properties
	connectorID, connector := tmpl.only(t, "AWS::AppRunner::VpcConnector")
	scalingID, scaling := tmpl.only(t, "AWS::AppRunner::AutoScalingConfiguration")
	for _, c := range []struct {
		what string
		got  any
		want string
	}{
		{"health check path", at(p, "HealthCheckConfiguration", "Path"), `"/healthz"`},
		{"health check protocol", at(p, "HealthCheckConfiguration", "Protocol"), `"HTTP"`},
		{"egress type", at(p, "NetworkConfiguration", "EgressConfiguration", "EgressType"), `"VPC"`},
		{"VPC connector", at(p, "NetworkConfiguration", "EgressConfiguration", "VpcConnectorArn"),
			`{"Fn::GetAtt":["` + connectorID + `","VpcConnectorArn"]}`},
		{"auto scaling configuration", p["AutoScalingConfigurationArn"],
			`{"Fn::GetAtt":["` + scalingID + `","AutoScalingConfigurationArn"]}`},
		{"auto deployments", at(p, "SourceConfiguration", "AutoDeploymentsEnabled"), `false`},
		{"image repository type", at(p, "SourceConfiguration", "ImageRepository", "ImageRepositoryType"), `"ECR"`},
		{"port", at(p, "SourceConfiguration", "ImageRepository", "ImageConfiguration", "Port"), `"8080"`},
		{"VPC connector name", connector.Properties["VpcConnectorName"], `null`},
		{"auto scaling configuration name", scaling.Properties["AutoScalingConfigurationName"], `null`},
	} {
		if got := js(c.got); got != c.want {
			t.Errorf("%s = %s, want %s", c.what, got, c.want)
		}
	}
	for _, subnet := range connector.Properties["Subnets"].([]any) {
		if id := refID(subnet); !strings.Contains(id, "Isolated") {
			t.Errorf("VPC connector subnet = %s, want an isolated subnet", id)
		}
	}
}

func TestAppRunnerRoles(t *testing.T) {
	tmpl := synth(t, ConduitStackProps{})
	_, svc := tmpl.only(t, "AWS::AppRunner::Service")
	accessRole := refID(at(svc.Properties, "SourceConfiguration", "AuthenticationConfiguration", "AccessRoleArn"))
	instanceRole := refID(at(svc.Properties, "InstanceConfiguration", "InstanceRoleArn"))

	if got := tmpl.trustedService(accessRole); got != "build.apprunner.amazonaws.com" {
		t.Errorf("access role trusts %s, want build.apprunner.amazonaws.com", got)
	}
	if got := tmpl.trustedService(instanceRole); got != "tasks.apprunner.amazonaws.com" {
		t.Errorf("instance role trusts %s, want tasks.apprunner.amazonaws.com", got)
	}
	if got := js(tmpl.Resources[instanceRole].Properties["ManagedPolicyArns"]); got != "null" {
		t.Errorf("instance role ManagedPolicyArns = %s, want none", got)
	}
	if got, want := tmpl.statementsOf(instanceRole), tmpl.readsTheTwoSecrets(t); got != want {
		t.Errorf("instance role statements = %s, want %s", got, want)
	}

	// The service must not start before the roles can act.
	checkDependsOn(t, svc, append(tmpl.policiesOf(accessRole), tmpl.policiesOf(instanceRole)...))
}

func TestECSExpressService(t *testing.T) {
	tmpl := synth(t, ConduitStackProps{Compute: computeECSExpress})
	_, svc := tmpl.only(t, "AWS::ECS::ExpressGatewayService")
	p := svc.Properties
	for _, c := range []struct {
		what string
		got  any
		want string
	}{
		{"health check path", p["HealthCheckPath"], `"/healthz"`},
		{"container port", at(p, "PrimaryContainer", "ContainerPort"), `8080`},
		{"security groups", at(p, "NetworkConfiguration", "SecurityGroups"), `[` + js(deployedService(t, tmpl).securityGroup) + `]`},
	} {
		if got := js(c.got); got != c.want {
			t.Errorf("%s = %s, want %s", c.what, got, c.want)
		}
	}

	for hash := range tmpl.dockerImages {
		if image := js(at(p, "PrimaryContainer", "Image")); !strings.Contains(image, ":"+hash) {
			t.Errorf("image = %s, want the image asset tagged %s", image, hash)
		}
	}

	// Public subnets: Express Mode makes its load balancer internet-facing
	// only there.
	subnets := at(p, "NetworkConfiguration", "Subnets").([]any)
	if len(subnets) != 2 {
		t.Errorf("service subnets = %s, want one per AZ", js(subnets))
	}
	for _, subnet := range subnets {
		if id := refID(subnet); !strings.Contains(id, "Public") {
			t.Errorf("service subnet = %s, want a public subnet", id)
		}
	}

	logGroup := tmpl.Resources[refID(at(p, "PrimaryContainer", "AwsLogsConfiguration", "LogGroup"))]
	if logGroup.Type != "AWS::Logs::LogGroup" || logGroup.Properties["RetentionInDays"] == nil {
		t.Errorf("service log group = %s, want a log group with a retention", js(logGroup))
	}

	// Tasks are reachable from the load balancer in the VPC, not the internet.
	for _, rule := range tmpl.ingressInto(deployedService(t, tmpl).securityGroup) {
		if cidr := js(rule["CidrIp"]); cidr == `"0.0.0.0/0"` || js(rule["CidrIpv6"]) == `"::/0"` {
			t.Errorf("service security group admits %s, want only the VPC", js(rule))
		}
	}
}

func TestECSExpressRoles(t *testing.T) {
	tmpl := synth(t, ConduitStackProps{Compute: computeECSExpress})
	_, svc := tmpl.only(t, "AWS::ECS::ExpressGatewayService")
	executionRole := refID(svc.Properties["ExecutionRoleArn"])
	taskRole := refID(svc.Properties["TaskRoleArn"])
	infrastructureRole := refID(svc.Properties["InfrastructureRoleArn"])

	for _, c := range []struct {
		what, role, trusts, managedPolicies, statements string
	}{
		{"execution role", executionRole, "ecs-tasks.amazonaws.com",
			managedPolicy("service-role/AmazonECSTaskExecutionRolePolicy"), tmpl.readsTheTwoSecrets(t)},
		{"task role", taskRole, "ecs-tasks.amazonaws.com", `null`, `[]`},
		{"infrastructure role", infrastructureRole, "ecs.amazonaws.com",
			managedPolicy("service-role/AmazonECSInfrastructureRoleforExpressGatewayServices"), `[]`},
	} {
		if got := tmpl.trustedService(c.role); got != c.trusts {
			t.Errorf("%s trusts %s, want %s", c.what, got, c.trusts)
		}
		if got := js(tmpl.Resources[c.role].Properties["ManagedPolicyArns"]); got != c.managedPolicies {
			t.Errorf("%s ManagedPolicyArns = %s, want %s", c.what, got, c.managedPolicies)
		}
		if got := tmpl.statementsOf(c.role); got != c.statements {
			t.Errorf("%s statements = %s, want %s", c.what, got, c.statements)
		}
	}
	checkDependsOn(t, svc, tmpl.policiesOf(executionRole))
}

// In public subnets the tasks have no public IP: they reach ECR, S3 (image
// layers), CloudWatch Logs and Secrets Manager through VPC endpoints, which
// must exist before the service starts.
func TestECSExpressEndpoints(t *testing.T) {
	for tier, zones := range map[string]int{"small": 1, "large": 2} {
		t.Run(tier, func(t *testing.T) {
			tmpl := synth(t, ConduitStackProps{Tier: tier, Compute: computeECSExpress})
			_, svc := tmpl.only(t, "AWS::ECS::ExpressGatewayService")
			serviceSG := js(deployedService(t, tmpl).securityGroup)

			var services []string
			for id, e := range tmpl.ofType("AWS::EC2::VPCEndpoint") {
				name := js(e.Properties["ServiceName"])
				services = append(services, name[strings.LastIndex(name, `".`)+2:strings.LastIndex(name, `"`)])
				checkDependsOn(t, svc, []string{id})
				if js(e.Properties["VpcEndpointType"]) == `"Gateway"` {
					continue
				}
				if got := js(e.Properties["PrivateDnsEnabled"]); got != "true" {
					t.Errorf("endpoint %s PrivateDnsEnabled = %s, want true", id, got)
				}
				if got := len(e.Properties["SubnetIds"].([]any)); got != zones {
					t.Errorf("endpoint %s is in %d zones, want %d", id, got, zones)
				}
				for _, sg := range e.Properties["SecurityGroupIds"].([]any) {
					for _, rule := range tmpl.ingressInto(sg) {
						if got := js(rule["SourceSecurityGroupId"]); got != serviceSG || js(rule["FromPort"]) != "443" {
							t.Errorf("endpoint %s admits %s, want only 443 from the service", id, js(rule))
						}
					}
				}
			}
			slices.Sort(services)
			if got, want := strings.Join(services, " "), "ecr.api ecr.dkr logs s3 secretsmanager"; got != want {
				t.Errorf("VPC endpoints = %s, want %s", got, want)
			}
		})
	}
}

func TestRejectsUnknownSettings(t *testing.T) {
	for _, props := range []ConduitStackProps{
		{Tier: "huge"},
		{Compute: "lambda"},
		{Compute: computeECSExpress, NATGateway: true},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewConduitStack(%s) did not panic", settings(props))
				}
			}()
			NewConduitStack(awscdk.NewApp(nil), "Conduit", &props)
		}()
	}
}

// The image the stack deploys must be built for App Runner's platform, and
// hold the CA bundle where the stack tells the service to find it.
func TestImageMatchesStack(t *testing.T) {
	tmpl := synth(t, ConduitStackProps{})
	for _, a := range tmpl.dockerImages {
		if a.Source.Platform != "linux/amd64" {
			t.Errorf("image platform = %q, want linux/amd64", a.Source.Platform)
		}
	}
	if len(tmpl.dockerImages) != 1 {
		t.Errorf("docker images = %d, want 1", len(tmpl.dockerImages))
	}

	dockerfile, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ADD --chmod=644 https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem " + rdsCABundlePath + "\n",
		"FROM gcr.io/distroless/static-debian12:nonroot\n",
		"EXPOSE 8080\n",
	} {
		if !strings.Contains(string(dockerfile), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	// CDK stages the build context by the rules of .dockerignore.
	for _, name := range tmpl.buildContext {
		if name == "cdk" || name == ".git" || name == ".pgdata" || strings.HasSuffix(name, "_test.go") {
			t.Errorf("image build context holds %s, want only what go build needs", name)
		}
	}
	if !slices.Contains(tmpl.buildContext, "go.mod") {
		t.Errorf("image build context = %v, want go.mod in it", tmpl.buildContext)
	}
}

// template is the part of a synthesized stack the tests read.
type template struct {
	Resources map[string]resource
	Outputs   map[string]struct{ Value any }

	dockerImages map[string]dockerImage
	buildContext []string // the files CDK staged for `docker build`
}

type dockerImage struct {
	Source struct{ Directory, Platform string }
}

type resource struct {
	Type                string
	Properties          map[string]any
	DependsOn           []string
	DeletionPolicy      string
	UpdateReplacePolicy string
}

var synthesized = map[string]*template{}

// settings names props as `cdk deploy -c` would set them, defaults filled in.
func settings(props ConduitStackProps) string {
	tier, compute := cmp.Or(props.Tier, defaultTier), cmp.Or(props.Compute, computeAppRunner)
	return fmt.Sprintf("tier=%s compute=%s nat=%t", tier, compute, props.NATGateway)
}

// synth returns the template of the stack built with props. Each distinct
// props is synthesized once per test run: a synth takes seconds.
func synth(t *testing.T, props ConduitStackProps) *template {
	t.Helper()
	key := settings(props)
	if tmpl, ok := synthesized[key]; ok {
		return tmpl
	}
	app := awscdk.NewApp(nil)
	stack := NewConduitStack(app, "Conduit", &props)
	raw, err := json.Marshal(assertions.Template_FromStack(stack, nil).ToJSON())
	if err != nil {
		t.Fatal(err)
	}
	var tmpl template
	if err := json.Unmarshal(raw, &tmpl); err != nil {
		t.Fatal(err)
	}

	// The asset manifest says how the image will be built.
	assembly := app.Synth(nil) // the assembly Template_FromStack just wrote
	manifest, err := os.ReadFile(filepath.Join(*assembly.Directory(), *stack.ArtifactId()+".assets.json"))
	if err != nil {
		t.Fatal(err)
	}
	var assets struct{ DockerImages map[string]dockerImage }
	if err := json.Unmarshal(manifest, &assets); err != nil {
		t.Fatal(err)
	}
	tmpl.dockerImages = assets.DockerImages
	for _, image := range assets.DockerImages {
		entries, err := os.ReadDir(filepath.Join(*assembly.Directory(), image.Source.Directory))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			tmpl.buildContext = append(tmpl.buildContext, e.Name())
		}
	}

	synthesized[key] = &tmpl
	return &tmpl
}

func (tmpl *template) ofType(typ string) map[string]resource {
	out := map[string]resource{}
	for id, r := range tmpl.Resources {
		if r.Type == typ {
			out[id] = r
		}
	}
	return out
}

// only returns the one resource of a type, failing the test if there are
// more or none.
func (tmpl *template) only(t *testing.T, typ string) (string, resource) {
	t.Helper()
	all := tmpl.ofType(typ)
	if len(all) != 1 {
		t.Fatalf("%s count = %d, want 1", typ, len(all))
	}
	for id, r := range all {
		return id, r
	}
	panic("unreachable")
}

// dbSecretID is the secret the database's credentials come from.
func (tmpl *template) dbSecretID(t *testing.T) string {
	t.Helper()
	_, db := tmpl.only(t, "AWS::RDS::DBInstance")
	for id := range tmpl.ofType("AWS::SecretsManager::Secret") {
		if strings.Contains(js(db.Properties["MasterUserPassword"]), `{"Ref":"`+id+`"}`) {
			return id
		}
	}
	t.Fatal("no secret holds the database's password")
	return ""
}

// jwtSecretID is the other secret.
func (tmpl *template) jwtSecretID(t *testing.T) string {
	t.Helper()
	dbSecret := tmpl.dbSecretID(t)
	for id := range tmpl.ofType("AWS::SecretsManager::Secret") {
		if id != dbSecret {
			return id
		}
	}
	t.Fatal("no secret besides the database's")
	return ""
}

// trustedService is the service principal a role trusts, or all of its
// assume-role policy if that is anything else.
func (tmpl *template) trustedService(role string) string {
	statements := at(tmpl.Resources[role].Properties, "AssumeRolePolicyDocument", "Statement").([]any)
	if len(statements) != 1 {
		return js(statements)
	}
	if s, ok := at(statements[0], "Principal", "Service").(string); ok {
		return s
	}
	return js(statements)
}

// policiesOf lists the inline policies attached to a role.
func (tmpl *template) policiesOf(role string) []string {
	var ids []string
	for id, p := range tmpl.ofType("AWS::IAM::Policy") {
		if strings.Contains(js(p.Properties["Roles"]), `{"Ref":"`+role+`"}`) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// deployed is what the tests read of the service, whichever compute runs it.
type deployed struct {
	id                   string
	minSize, maxSize     any
	cpu, memory          any
	environment, secrets map[string]string // name -> JSON of the value
	securityGroup        any               // the group the service connects from
}

func deployedService(t *testing.T, tmpl *template) deployed {
	t.Helper()
	if len(tmpl.ofType("AWS::AppRunner::Service")) == 1 {
		id, svc := tmpl.only(t, "AWS::AppRunner::Service")
		_, scaling := tmpl.only(t, "AWS::AppRunner::AutoScalingConfiguration")
		_, connector := tmpl.only(t, "AWS::AppRunner::VpcConnector")
		image := at(svc.Properties, "SourceConfiguration", "ImageRepository", "ImageConfiguration")
		return deployed{
			id:            id,
			minSize:       scaling.Properties["MinSize"],
			maxSize:       scaling.Properties["MaxSize"],
			cpu:           at(svc.Properties, "InstanceConfiguration", "Cpu"),
			memory:        at(svc.Properties, "InstanceConfiguration", "Memory"),
			environment:   pairs(at(image, "RuntimeEnvironmentVariables"), "Name", "Value"),
			secrets:       pairs(at(image, "RuntimeEnvironmentSecrets"), "Name", "Value"),
			securityGroup: connector.Properties["SecurityGroups"].([]any)[0],
		}
	}
	id, svc := tmpl.only(t, "AWS::ECS::ExpressGatewayService")
	p := svc.Properties
	return deployed{
		id:            id,
		minSize:       at(p, "ScalingTarget", "MinTaskCount"),
		maxSize:       at(p, "ScalingTarget", "MaxTaskCount"),
		cpu:           p["Cpu"],
		memory:        p["Memory"],
		environment:   pairs(at(p, "PrimaryContainer", "Environment"), "Name", "Value"),
		secrets:       pairs(at(p, "PrimaryContainer", "Secrets"), "Name", "ValueFrom"),
		securityGroup: at(p, "NetworkConfiguration", "SecurityGroups").([]any)[0],
	}
}

// ingressInto lists the rules admitting traffic into a security group,
// given as a template value: inline ones and separate resources alike.
func (tmpl *template) ingressInto(group any) []map[string]any {
	var rules []map[string]any
	for id, sg := range tmpl.ofType("AWS::EC2::SecurityGroup") {
		if js(group) == js(map[string]any{"Fn::GetAtt": []string{id, "GroupId"}}) {
			inline, _ := sg.Properties["SecurityGroupIngress"].([]any)
			for _, rule := range inline {
				rules = append(rules, rule.(map[string]any))
			}
		}
	}
	for _, r := range tmpl.ofType("AWS::EC2::SecurityGroupIngress") {
		if js(r.Properties["GroupId"]) == js(group) {
			rules = append(rules, r.Properties)
		}
	}
	return rules
}

// statementsOf is the JSON of all statements in a role's inline policies.
func (tmpl *template) statementsOf(role string) string {
	statements := []any{}
	for _, policy := range tmpl.policiesOf(role) {
		statements = append(statements, at(tmpl.Resources[policy].Properties, "PolicyDocument", "Statement").([]any)...)
	}
	return js(statements)
}

// readsTheTwoSecrets is the one statement a role reading the service's
// secrets, and nothing else, holds.
func (tmpl *template) readsTheTwoSecrets(t *testing.T) string {
	return `[{"Action":"secretsmanager:GetSecretValue","Effect":"Allow","Resource":[{"Ref":"` +
		tmpl.dbSecretID(t) + `"},{"Ref":"` + tmpl.jwtSecretID(t) + `"}]}]`
}

// managedPolicy is the JSON CDK writes for an AWS managed policy's ARN.
func managedPolicy(name string) string {
	return `[{"Fn::Join":["",["arn:",{"Ref":"AWS::Partition"},":iam::aws:policy/` + name + `"]]}]`
}

func checkDependsOn(t *testing.T, r resource, ids []string) {
	t.Helper()
	for _, id := range ids {
		if !slices.Contains(r.DependsOn, id) {
			t.Errorf("service DependsOn = %v, want it to include %s", r.DependsOn, id)
		}
	}
}

// js renders a template value as compact JSON, the form tests compare.
func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return "!" + err.Error()
	}
	return string(b)
}

// at walks into nested template objects; a missing key gives nil.
func at(v any, path ...string) any {
	for _, key := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[key]
	}
	return v
}

// refID is the logical ID in a {"Ref": id} or {"Fn::GetAtt": [id, attr]}.
func refID(v any) string {
	if id, ok := at(v, "Ref").(string); ok {
		return id
	}
	if getAtt, ok := at(v, "Fn::GetAtt").([]any); ok && len(getAtt) == 2 {
		id, _ := getAtt[0].(string)
		return id
	}
	return js(v)
}

// pairs turns a list of {name: N, value: V} objects into N -> JSON of V.
func pairs(list any, name, value string) map[string]string {
	out := map[string]string{}
	items, _ := list.([]any)
	for _, item := range items {
		n, _ := at(item, name).(string)
		out[n] = js(at(item, value))
	}
	return out
}

func checkPairs(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for name, w := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("%s lacks %s", what, name)
		} else if g != w {
			t.Errorf("%s %s = %s, want %s", what, name, g, w)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s has unexpected %s", what, name)
		}
	}
}

// atoi reads a number given as JSON, quoted or not.
func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.Trim(s, `"`))
	if err != nil {
		t.Fatalf("%s is not a number", s)
	}
	return n
}
