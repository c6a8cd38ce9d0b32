// The ECS Express Mode compute, for accounts App Runner no longer accepts:
// one Express service (Fargate tasks behind an HTTPS load balancer that ECS
// creates and manages), its three roles, its log group, and the VPC
// endpoints its tasks need.
package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsecs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/jsii-runtime-go"
)

// newECSExpressService runs svc on ECS Express Mode and returns the
// service's HTTPS URL and the security group its tasks are in.
//
// Express Mode puts its load balancer and the tasks in the same subnets, and
// makes the load balancer internet-facing only in public subnets, so svc's
// subnets are public. The tasks get no public IP there, so they reach ECR,
// CloudWatch Logs and Secrets Manager through VPC endpoints; a NAT gateway
// would not help, as public subnets route to the internet gateway. The
// database stays in its isolated subnets.
func newECSExpressService(stack awscdk.Stack, svc service) (url *string, sg awsec2.ISecurityGroup) {
	sg = awsec2.NewSecurityGroup(stack, jsii.String("ServiceSecurityGroup"), &awsec2.SecurityGroupProps{
		Vpc:              svc.vpc,
		Description:      jsii.String("Conduit ECS Express tasks"),
		AllowAllOutbound: jsii.Bool(true),
	})
	// The load balancer's security group is made by ECS after this stack is
	// written, so admit the VPC's own range: the tasks have no public IP, so
	// nothing outside the VPC can reach them directly.
	sg.AddIngressRule(awsec2.Peer_Ipv4(svc.vpc.VpcCidrBlock()), awsec2.Port_Tcp(jsii.Number(8080)),
		jsii.String("From the Express Mode load balancer"), nil)

	endpoints := newVPCEndpoints(stack, svc, sg)

	logs := awslogs.NewLogGroup(stack, jsii.String("ServiceLogs"), &awslogs.LogGroupProps{
		Retention:     awslogs.RetentionDays_ONE_MONTH,
		RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})

	// ECS pulls the image, writes the logs and injects the secrets with
	// the execution role...
	executionRole := awsiam.NewRole(stack, jsii.String("ExecutionRole"), &awsiam.RoleProps{
		AssumedBy: awsiam.NewServicePrincipal(jsii.String("ecs-tasks.amazonaws.com"), nil),
		ManagedPolicies: &[]awsiam.IManagedPolicy{
			awsiam.ManagedPolicy_FromAwsManagedPolicyName(jsii.String("service-role/AmazonECSTaskExecutionRolePolicy")),
		},
	})
	executionRole.AddToPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Actions:   jsii.Strings("secretsmanager:GetSecretValue"),
		Resources: &svc.secretARNs,
	}))
	// ...the service's own code calls no AWS API, so its task role may do nothing...
	taskRole := awsiam.NewRole(stack, jsii.String("TaskRole"), &awsiam.RoleProps{
		AssumedBy: awsiam.NewServicePrincipal(jsii.String("ecs-tasks.amazonaws.com"), nil),
	})
	// ...and ECS builds the load balancer, certificate and scaling with this one.
	infrastructureRole := awsiam.NewRole(stack, jsii.String("InfrastructureRole"), &awsiam.RoleProps{
		AssumedBy: awsiam.NewServicePrincipal(jsii.String("ecs.amazonaws.com"), nil),
		ManagedPolicies: &[]awsiam.IManagedPolicy{
			awsiam.ManagedPolicy_FromAwsManagedPolicyName(jsii.String("service-role/AmazonECSInfrastructureRoleforExpressGatewayServices")),
		},
	})

	var environment, secrets []interface{}
	for _, e := range svc.environment {
		environment = append(environment, &awsecs.CfnExpressGatewayService_KeyValuePairProperty{
			Name: jsii.String(e.name), Value: e.value,
		})
	}
	for _, s := range svc.secrets {
		secrets = append(secrets, &awsecs.CfnExpressGatewayService_SecretProperty{
			Name: jsii.String(s.name), ValueFrom: s.value,
		})
	}

	service := awsecs.NewCfnExpressGatewayService(stack, jsii.String("Service"), &awsecs.CfnExpressGatewayServiceProps{
		InfrastructureRoleArn: infrastructureRole.RoleArn(),
		ExecutionRoleArn:      executionRole.RoleArn(),
		TaskRoleArn:           taskRole.RoleArn(),
		Cpu:                   jsii.String(svc.tier.cpu),
		Memory:                jsii.String(svc.tier.memory),
		// Liveness only, as on App Runner.
		HealthCheckPath: jsii.String("/healthz"),
		NetworkConfiguration: &awsecs.CfnExpressGatewayService_ExpressGatewayServiceNetworkConfigurationProperty{
			Subnets:        svc.vpc.SelectSubnets(svc.subnets).SubnetIds,
			SecurityGroups: &[]*string{sg.SecurityGroupId()},
		},
		PrimaryContainer: &awsecs.CfnExpressGatewayService_ExpressGatewayContainerProperty{
			Image:         svc.image.ImageUri(),
			ContainerPort: jsii.Number(8080),
			Environment:   &environment,
			Secrets:       &secrets,
			AwsLogsConfiguration: &awsecs.CfnExpressGatewayService_ExpressGatewayServiceAwsLogsConfigurationProperty{
				LogGroup:        logs.LogGroupName(),
				LogStreamPrefix: jsii.String("conduit"),
			},
		},
		ScalingTarget: &awsecs.CfnExpressGatewayService_ExpressGatewayScalingTargetProperty{
			MinTaskCount:           jsii.Number(float64(svc.tier.minInstances)),
			MaxTaskCount:           jsii.Number(float64(svc.tier.maxInstances)),
			AutoScalingMetric:      jsii.String("AVERAGE_CPU"),
			AutoScalingTargetValue: jsii.Number(60),
		},
	})
	// Tasks cannot start before the roles' policies attach and the
	// endpoints they pull and log through exist.
	service.Node().AddDependency(executionRole, infrastructureRole)
	for _, e := range endpoints {
		service.Node().AddDependency(e)
	}

	// The endpoint is a host name on a certificate ECS provisions.
	return jsii.String("https://" + *service.AttrEndpoint()), sg
}

// newVPCEndpoints gives the tasks a private way to what they need at start
// and while running. The S3 gateway endpoint (image layers) is free;
// interface endpoints are billed per hour and zone, so they sit in one zone
// unless the tier pays to survive a zone's loss.
func newVPCEndpoints(stack awscdk.Stack, svc service, from awsec2.ISecurityGroup) []awsec2.IVpcEndpoint {
	subnets := *svc.vpc.SelectSubnets(svc.subnets).Subnets
	if !svc.tier.multiAZ {
		subnets = subnets[:1]
	}
	endpointSG := awsec2.NewSecurityGroup(stack, jsii.String("EndpointSecurityGroup"), &awsec2.SecurityGroupProps{
		Vpc:              svc.vpc,
		Description:      jsii.String("VPC endpoints of the Conduit tasks"),
		AllowAllOutbound: jsii.Bool(false),
	})
	endpointSG.AddIngressRule(from, awsec2.Port_Tcp(jsii.Number(443)), jsii.String("From the Conduit tasks"), nil)

	endpoints := []awsec2.IVpcEndpoint{
		svc.vpc.AddGatewayEndpoint(jsii.String("S3Endpoint"), &awsec2.GatewayVpcEndpointOptions{
			Service: awsec2.GatewayVpcEndpointAwsService_S3(),
			Subnets: &[]*awsec2.SubnetSelection{svc.subnets},
		}),
	}
	for _, e := range []struct {
		id      string
		service awsec2.InterfaceVpcEndpointAwsService
	}{
		{"EcrApiEndpoint", awsec2.InterfaceVpcEndpointAwsService_ECR()},
		{"EcrDockerEndpoint", awsec2.InterfaceVpcEndpointAwsService_ECR_DOCKER()},
		{"LogsEndpoint", awsec2.InterfaceVpcEndpointAwsService_CLOUDWATCH_LOGS()},
		{"SecretsManagerEndpoint", awsec2.InterfaceVpcEndpointAwsService_SECRETS_MANAGER()},
	} {
		endpoints = append(endpoints, svc.vpc.AddInterfaceEndpoint(jsii.String(e.id), &awsec2.InterfaceVpcEndpointOptions{
			Service:        e.service,
			Subnets:        &awsec2.SubnetSelection{Subnets: &subnets},
			SecurityGroups: &[]awsec2.ISecurityGroup{endpointSG},
			Open:           jsii.Bool(false), // only the tasks, not the whole VPC
		}))
	}
	return endpoints
}
