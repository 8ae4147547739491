package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/multilang"
)

// A KCL MultiLangDaemon .properties file (--properties, KCL_PROPERTIES) gives defaults to
// the settings its keys map onto: a flag or an environment variable still wins over it.
// Keys without an equivalent, and unknown keys, are warned about and ignored.

// propertiesPath returns the properties file named by --properties (-properties, with
// '=' or as the next argument) in args, else by KCL_PROPERTIES.
func propertiesPath(args []string, getenv func(string) string) string {
	for i, a := range args {
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "properties" {
			continue
		}
		if hasValue {
			return value
		}
		if i+1 < len(args) {
			return args[i+1]
		}
	}
	return getenv("KCL_PROPERTIES")
}

// readProperties reads the properties file at path into the values of the settings
// (by environment variable) its keys map onto, and warnings for the keys it ignores.
func readProperties(path string) (map[string]string, []string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	props, err := multilang.ParseProperties(f)
	if err != nil {
		return nil, nil, err
	}
	env := make(map[string]string)
	var warnings []string
	for _, p := range props {
		vars, why, err := kclProperty(p.Key, strings.TrimSpace(p.Value))
		if err != nil {
			return nil, nil, fmt.Errorf("line %d: %s = %q: %w", p.Line, p.Key, p.Value, err)
		}
		if why != "" {
			warnings = append(warnings, fmt.Sprintf("%s line %d: %s ignored: %s", path, p.Line, p.Key, why))
		}
		for i := 0; i+1 < len(vars); i += 2 {
			env[vars[i]] = vars[i+1]
		}
	}
	return env, warnings, nil
}

// kclProperty maps one KCL property onto settings: environment variable and value pairs,
// or why it is ignored. An error is a value the KCL would refuse too.
func kclProperty(key, v string) (vars []string, ignored string, err error) {
	// Keys taken as they are, and durations in the KCL's units.
	plain := map[string]string{"executableName": "MULTILANG_COMMAND", "streamName": "STREAM_NAME",
		"applicationName": "APP_NAME", "workerId": "WORKER_ID", "regionName": "AWS_REGION",
		"initialPositionInStream": "INITIAL_POSITION", "maxLeasesForWorker": "MAX_LEASES_CAP", "maxRecords": "MAX_RECORDS_PER_GET",
		"tableName": "LEASE_TABLE"}
	type inUnits struct {
		env  string
		unit time.Duration
	}
	durations := map[string]inUnits{"failoverTimeMillis": {"LEASE_DURATION", time.Millisecond},
		"shardSyncIntervalMillis": {"SHARD_SYNC_INTERVAL", time.Millisecond}, "idleTimeBetweenReadsInMillis": {"IDLE_TIME_BETWEEN_READS", time.Millisecond},
		"shutdownGraceMillis": {"SHUTDOWN_TIMEOUT", time.Millisecond}, "timeoutInSeconds": {"MULTILANG_TIMEOUT", time.Second}}
	if env, ok := plain[key]; ok {
		return []string{env, v}, "", nil
	}
	if d, ok := durations[key]; ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, "", fmt.Errorf("want a whole number of %s", map[time.Duration]string{time.Millisecond: "milliseconds", time.Second: "seconds"}[d.unit])
		}
		return []string{d.env, (time.Duration(n) * d.unit).String()}, "", nil
	}
	switch key {
	case "kinesisEndpoint", "dynamoDBEndpoint":
		if v != "" && !strings.Contains(v, "://") {
			v = "https://" + v
		}
		return []string{"AWS_ENDPOINT_URL_" + strings.ToUpper(strings.TrimSuffix(key, "Endpoint")), v}, "", nil
	case "initialPositionInStreamExtended":
		// The KCL's AT_TIMESTAMP: Unix seconds.
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, "", errors.New("want a Unix time in seconds")
		}
		return []string{"INITIAL_POSITION", "AT_TIMESTAMP", "INITIAL_TIMESTAMP", time.Unix(n, 0).UTC().Format(time.RFC3339)}, "", nil
	case "AWSCredentialsProvider", "AWSCredentialsProviderDynamoDB":
		return nil, "credentials come from the AWS SDK's default chain (environment, profile, EKS IRSA or Pod Identity, instance role)", nil
	case "processingLanguage", "cleanupLeasesUponShardCompletion",
		"callProcessRecordsEvenForEmptyRecordList", "parentShardPollIntervalMillis",
		"taskBackoffTimeMillis", "maxLeasesToStealAtOneTime", "maxLeaseRenewalThreads",
		"validateSequenceNumberBeforeCheckpointing", "retrievalMode",
		"initialLeaseTableReadCapacity", "initialLeaseTableWriteCapacity",
		"logWarningForTaskAfterMillis", "listShardsBackoffTimeInMillis",
		"maxListShardsRetryAttempts", "skipShardSyncAtWorkerInitializationIfLeasesExist",
		"shardPrioritization", "ignoreUnexpectedChildShards", "metricsLevel",
		"metricsEnabledDimensions", "metricsBufferTimeMillis", "metricsMaxQueueSize",
		"maxGetRecordsThreadPool", "retryGetRecordsInSeconds",
		"schedulerInitializationBackoffTimeMillis", "cloudWatchRegionName",
		"AWSCredentialsProviderCloudWatch":
		// The KCL's own threads, retries and CloudWatch metrics, or what the lease manager decides itself.
		return nil, "no equivalent in kds-consumer (the lease manager decides it)", nil
	}
	return nil, "unknown key", nil
}
