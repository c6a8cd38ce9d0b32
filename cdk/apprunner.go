// The App Runner compute: the service, its VPC connector, its scaling, and
// the two roles App Runner needs.
package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapprunner"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/jsii-runtime-go"
)

// newAppRunnerService runs svc on App Runner and returns the service's HTTPS
// URL and the security group its traffic into the VPC leaves from.
func newAppRunnerService(stack awscdk.Stack, svc service) (url *string, sg awsec2.ISecurityGroup) {
	sg = awsec2.NewSecurityGroup(stack, jsii.String("ServiceSecurityGroup"), &awsec2.SecurityGroupProps{
		Vpc:         svc.vpc,
		Description: jsii.String("Conduit App Runner VPC connector"),
		// Isolated subnets have no route out anyway; with NAT on, the
		// service may call the internet.
		AllowAllOutbound: jsii.Bool(true),
	})
	// Unnamed, like the scaling configuration below: a name blocks
	// replacement and counts against App Runner's naming quota.
	connector := awsapprunner.NewCfnVpcConnector(stack, jsii.String("VpcConnector"), &awsapprunner.CfnVpcConnectorProps{
		Subnets:        svc.vpc.SelectSubnets(svc.subnets).SubnetIds,
		SecurityGroups: &[]interface{}{sg.SecurityGroupId()},
	})
	scaling := awsapprunner.NewCfnAutoScalingConfiguration(stack, jsii.String("AutoScaling"), &awsapprunner.CfnAutoScalingConfigurationProps{
		MinSize: jsii.Number(float64(svc.tier.minInstances)),
		MaxSize: jsii.Number(float64(svc.tier.maxInstances)),
	})

	// App Runner pulls the image with this role...
	accessRole := awsiam.NewRole(stack, jsii.String("ImagePullRole"), &awsiam.RoleProps{
		AssumedBy: awsiam.NewServicePrincipal(jsii.String("build.apprunner.amazonaws.com"), nil),
	})
	svc.image.Repository().GrantPull(accessRole)
	// As in AWS's managed AWSAppRunnerServicePolicyForECRAccess, limited to this repository.
	svc.image.Repository().Grant(accessRole, jsii.String("ecr:DescribeImages"))
	// ...and reads the runtime secrets with this one.
	instanceRole := awsiam.NewRole(stack, jsii.String("InstanceRole"), &awsiam.RoleProps{
		AssumedBy: awsiam.NewServicePrincipal(jsii.String("tasks.apprunner.amazonaws.com"), nil),
	})
	instanceRole.AddToPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Actions:   jsii.Strings("secretsmanager:GetSecretValue"),
		Resources: &svc.secretARNs,
	}))

	service := awsapprunner.NewCfnService(stack, jsii.String("Service"), &awsapprunner.CfnServiceProps{
		SourceConfiguration: &awsapprunner.CfnService_SourceConfigurationProperty{
			AuthenticationConfiguration: &awsapprunner.CfnService_AuthenticationConfigurationProperty{
				AccessRoleArn: accessRole.RoleArn(),
			},
			// `cdk deploy` pushes a new image tag and updates the service
			// itself; nothing should deploy behind its back.
			AutoDeploymentsEnabled: jsii.Bool(false),
			ImageRepository: &awsapprunner.CfnService_ImageRepositoryProperty{
				ImageRepositoryType: jsii.String("ECR"),
				ImageIdentifier:     svc.image.ImageUri(),
				ImageConfiguration: &awsapprunner.CfnService_ImageConfigurationProperty{
					Port:                        jsii.String("8080"),
					RuntimeEnvironmentVariables: appRunnerPairs(svc.environment),
					RuntimeEnvironmentSecrets:   appRunnerPairs(svc.secrets),
				},
			},
		},
		InstanceConfiguration: &awsapprunner.CfnService_InstanceConfigurationProperty{
			Cpu:             jsii.String(svc.tier.cpu),
			Memory:          jsii.String(svc.tier.memory),
			InstanceRoleArn: instanceRole.RoleArn(),
		},
		// Liveness only: a check that touched the database would recycle
		// every instance during a database outage.
		HealthCheckConfiguration: &awsapprunner.CfnService_HealthCheckConfigurationProperty{
			Protocol: jsii.String("HTTP"),
			Path:     jsii.String("/healthz"),
		},
		NetworkConfiguration: &awsapprunner.CfnService_NetworkConfigurationProperty{
			EgressConfiguration: &awsapprunner.CfnService_EgressConfigurationProperty{
				EgressType:      jsii.String("VPC"),
				VpcConnectorArn: connector.AttrVpcConnectorArn(),
			},
		},
		AutoScalingConfigurationArn: scaling.AttrAutoScalingConfigurationArn(),
	})
	// The roles' policies are separate resources; without this the service
	// can start before they attach and fail to pull or to read its secrets.
	service.Node().AddDependency(accessRole, instanceRole)

	return jsii.String("https://" + *service.AttrServiceUrl()), sg
}

func appRunnerPairs(pairs []nameValue) *[]interface{} {
	var out []interface{}
	for _, p := range pairs {
		out = append(out, &awsapprunner.CfnService_KeyValuePairProperty{
			Name:  jsii.String(p.name),
			Value: p.value,
		})
	}
	return &out
}
