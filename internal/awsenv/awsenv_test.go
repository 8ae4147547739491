package awsenv

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
)

// Missing credentials are reported as such, with how to provide them; present ones pass.
func TestCheckCredentials(t *testing.T) {
	failing := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{}, errors.New("no EC2 IMDS role found, operation error ec2imds: GetMetadata, access disabled to EC2 IMDS")
	})
	err := CheckCredentials(t.Context(), aws.Config{Credentials: failing})
	if !errors.Is(err, ErrNoCredentials) {
		t.Fatalf("err = %v, want ErrNoCredentials", err)
	}
	for _, want := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "IRSA"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not mention %s", err, want)
		}
	}
	if err := CheckCredentials(t.Context(), aws.Config{}); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("no provider: err = %v", err)
	}
	ok := credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", "")
	if err := CheckCredentials(t.Context(), aws.Config{Credentials: ok}); err != nil {
		t.Errorf("static credentials refused: %v", err)
	}
}

// The region and the endpoints come from the SDK's own chain (the environment here):
// a region given on the command line overrides it, and AWS_ENDPOINT_URL_KINESIS wins over
// AWS_ENDPOINT_URL for Kinesis only, as the SDK resolves them.
func TestLoadUsesTheSDKsChain(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_REGION", "eu-west-3")
	t.Setenv("AWS_ENDPOINT_URL", "http://global:4566")
	t.Setenv("AWS_ENDPOINT_URL_KINESIS", "http://kinesis:4567")
	for _, tc := range []struct{ override, want string }{{"", "eu-west-3"}, {"ap-south-1", "ap-south-1"}} {
		cfg, err := Load(t.Context(), config.LoadDefaultConfig, tc.override)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Region != tc.want {
			t.Errorf("override %q: region %q, want %q", tc.override, cfg.Region, tc.want)
		}
		if got := aws.ToString(kinesis.NewFromConfig(cfg).Options().BaseEndpoint); got != "http://kinesis:4567" {
			t.Errorf("Kinesis endpoint %q, want AWS_ENDPOINT_URL_KINESIS's", got)
		}
		if got := aws.ToString(dynamodb.NewFromConfig(cfg).Options().BaseEndpoint); got != "http://global:4566" {
			t.Errorf("DynamoDB endpoint %q, want AWS_ENDPOINT_URL's", got)
		}
	}
	t.Setenv("AWS_REGION", "")
	if _, err := Load(t.Context(), config.LoadDefaultConfig, ""); !errors.Is(err, ErrNoRegion) {
		t.Errorf("without a region: err = %v, want ErrNoRegion", err)
	}
}

func TestStaticAppliesTheRegionOverride(t *testing.T) {
	load := Static(aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("a", "b", "")})
	for _, tc := range []struct{ override, want string }{{"", "us-east-1"}, {"eu-west-1", "eu-west-1"}} {
		cfg, err := Load(t.Context(), load, tc.override)
		if err != nil || cfg.Region != tc.want {
			t.Errorf("override %q: %q, %v; want %q", tc.override, cfg.Region, err, tc.want)
		}
	}
}
