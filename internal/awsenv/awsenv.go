// Package awsenv loads the AWS configuration of both binaries (kds-consumer, kdsctl) the
// SDK's own way: credentials, region (AWS_REGION, the profile's region) and endpoints
// (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_KINESIS / AWS_ENDPOINT_URL_DYNAMODB, the profile's
// services section) from the SDK's chains, with a region or endpoint given on the command
// line as an override only. It fails early, saying what to set, when no region or no
// credentials are found, instead of at the first call with the SDK's message (usually
// about the EC2 instance metadata service).
package awsenv

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
)

// ErrNoCredentials explains how to give the binaries credentials.
var ErrNoCredentials = errors.New("no usable AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY " +
	"(and AWS_SESSION_TOKEN for temporary credentials), or AWS_PROFILE with a shared credentials file, " +
	"or give the pod an IAM role (EKS IRSA: AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE; or EKS Pod Identity); " +
	"on EC2 the instance role is used unless AWS_EC2_METADATA_DISABLED=true")

// ErrNoRegion explains how to give the binaries a region.
var ErrNoRegion = errors.New("no AWS region: set AWS_REGION (or --region), or a region in the AWS profile (AWS_PROFILE, ~/.aws/config)")

// CredentialsTimeout bounds the credential look-up; the SDK's chain ends with the
// instance metadata service, which answers slowly or never off EC2.
const CredentialsTimeout = 20 * time.Second

// Loader loads the SDK's configuration: config.LoadDefaultConfig, or a substitute in
// tests (see Static).
type Loader func(ctx context.Context, optFns ...func(*config.LoadOptions) error) (aws.Config, error)

// Load loads the configuration with load, region overriding the SDK's when not empty,
// and checks that it has a region and usable credentials.
func Load(ctx context.Context, load Loader, region string) (aws.Config, error) {
	var opts []func(*config.LoadOptions) error
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	cfg, err := load(ctx, opts...)
	if err != nil {
		return cfg, fmt.Errorf("load AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return cfg, ErrNoRegion
	}
	return cfg, CheckCredentials(ctx, cfg)
}

// CheckCredentials fails, with ErrNoCredentials, when cfg yields no credentials within
// CredentialsTimeout. Nothing of the credentials is printed.
func CheckCredentials(ctx context.Context, cfg aws.Config) error {
	if cfg.Credentials == nil {
		return ErrNoCredentials
	}
	rctx, cancel := context.WithTimeout(ctx, CredentialsTimeout)
	defer cancel()
	creds, err := cfg.Credentials.Retrieve(rctx)
	if err != nil {
		if ctx.Err() != nil {
			return err // shutting down, not a configuration problem
		}
		return fmt.Errorf("%w (the SDK said: %v)", ErrNoCredentials, err)
	}
	if creds.AccessKeyID == "" || creds.SecretAccessKey == "" {
		return ErrNoCredentials
	}
	return nil
}

// Static returns a Loader that answers with a copy of cfg, its region replaced by an
// override, for tests that must not read the machine's AWS settings.
func Static(cfg aws.Config) Loader {
	return func(_ context.Context, optFns ...func(*config.LoadOptions) error) (aws.Config, error) {
		var lo config.LoadOptions
		for _, f := range optFns {
			if err := f(&lo); err != nil {
				return aws.Config{}, err
			}
		}
		c := cfg.Copy()
		if lo.Region != "" {
			c.Region = lo.Region
		}
		return c, nil
	}
}
