// Command kdsctl is the operator tool for a kds-lease-manager deployment: it manages the
// stream, shows the metadata and lease tables, produces test records, verifies what the
// workers processed and waits for the lease table to converge.
//
// Flags default to the worker's environment: AWS_ENDPOINT_URL, AWS_REGION, APP_NAME, LEASE_TABLE,
// STREAM_NAME. Exit status: 0 success, 1 failure, 2 usage error. `kdsctl help` lists the
// commands, `kdsctl COMMAND --help` describes one.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kds-lease-manager/kds-lease-manager/dynamostore"
	"github.com/kds-lease-manager/kds-lease-manager/internal/awsenv"
	"github.com/kds-lease-manager/kds-lease-manager/internal/buildinfo"
)

// errUsage marks errors that exit with status 2.
var errUsage = errors.New("usage")

// usageError returns an error that exits with status 2.
func usageError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

// command is one subcommand.
type command struct {
	name, args, summary string
	run                 func(ctx context.Context, e *env, args []string) error
}

// commands returns the subcommands in the order `kdsctl help` lists them.
func commands() []command {
	return []command{
		{"create-stream", "NAME --shards N", "create a stream and wait until it is ACTIVE", createStream},
		{"delete-stream", "[NAME]", "delete a stream and wait until it is gone", deleteStream},
		{"scale-shards", "N", "change the open shard count (in steps of at most 2x) and wait", scaleShards},
		{"metadata", "", "the metadata table: workers and the coordinator item", metadata},
		{"leases", "", "one row per shard lease, and leases per worker", leases},
		{"monitor", "[--interval 10s]", "refresh workers, coordinator and leases until Ctrl+C", monitor},
		{"dashboard", "[--addr 127.0.0.1:8090]", "serve a live web page of shards, workers, coordinator, events", dashboardCmd},
		{"produce", "--rate R (--duration D | --count N)", "write test records with per-key sequence numbers", produce},
		{"verify", "[--records-dir DIR]", "compare the stream with the workers' record logs", verify},
		{"expect", "--shards S --max-leases M", "wait until coordinator and lease table match, PASS or FAIL", expect},
		{"version", "", "print the build: version, revision, Go version", version},
	}
}

// version prints the build; it needs no AWS access.
func version(_ context.Context, e *env, args []string) error {
	if err := e.parseNone(e.flags("version"), args); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "kdsctl", buildinfo.Read())
	return nil
}

func (e *env) mainUsage(w io.Writer) {
	fmt.Fprint(w, "usage: kdsctl [global flags] COMMAND [flags] [args]\n\ncommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-14s %-38s %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprint(w, "\nglobal flags (also accepted after the command):\n")
	fs := flag.NewFlagSet("kdsctl", flag.ContinueOnError)
	c := *e // registering must not touch e's values
	c.register(fs)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprint(w, "\nexit status: 0 success, 1 failure, 2 usage error\n")
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// runMain runs kdsctl and turns the outcome into an exit status, reporting errors on stderr.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return exitCode(run(ctx, args, stdout, stderr), stderr)
}

func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "kdsctl:", err)
		fmt.Fprintln(stderr, "run 'kdsctl help' or 'kdsctl COMMAND --help' for usage")
		return 2
	default:
		fmt.Fprintln(stderr, "kdsctl:", err)
		return 1
	}
}

// run is kdsctl's entry point without the process around it: tests call it directly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return newEnv(stdout, stderr, nil).run(ctx, args)
}

// run runs one command line. --help anywhere succeeds once the usage is printed.
func (e *env) run(ctx context.Context, args []string) error {
	err := e.dispatch(ctx, args)
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}

// env is what every command works with: the connection settings, the output format and
// the output streams.
type env struct {
	endpoint, region, app, stream, output string
	// leaseTable is an adopted lease table (the worker's LEASE_TABLE); empty: APP.
	leaseTable     string
	stdout, stderr io.Writer
	// loadConfig loads the AWS configuration; tests substitute static credentials.
	loadConfig awsenv.Loader
}

// newEnv returns the defaults: the region and endpoints are the SDK's (AWS_REGION,
// AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_KINESIS / _DYNAMODB, the profile), --region and
// --endpoint override them.
func newEnv(stdout, stderr io.Writer, loadConfig awsenv.Loader) *env {
	if loadConfig == nil {
		loadConfig = awsconfig.LoadDefaultConfig
	}
	return &env{
		app:        getenv("APP_NAME", "kds-consumer-app"),
		leaseTable: os.Getenv("LEASE_TABLE"),
		stream:     getenv("STREAM_NAME", "test-stream"),
		output:     "table",
		stdout:     stdout,
		stderr:     stderr,
		loadConfig: loadConfig,
	}
}

func getenv(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// register adds the global flags to fs, defaulting to e's current values, so that they are
// accepted both before and after the command name.
func (e *env) register(fs *flag.FlagSet) {
	fs.StringVar(&e.endpoint, "endpoint", e.endpoint, "endpoint URL for Kinesis and DynamoDB, over the SDK's (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_KINESIS / _DYNAMODB)")
	fs.StringVar(&e.region, "region", e.region, "AWS region, over the SDK's (AWS_REGION, the profile's)")
	fs.StringVar(&e.app, "app", e.app, "application name: lease table APP (unless --lease-table), metadata table APP_meta [APP_NAME]")
	fs.StringVar(&e.leaseTable, "lease-table", e.leaseTable, "an adopted lease table, such as a KCL application's, instead of APP [LEASE_TABLE]")
	fs.StringVar(&e.stream, "stream", e.stream, "stream name [STREAM_NAME]")
	fs.StringVar(&e.output, "o", e.output, "output format: table or json")
}

func (e *env) dispatch(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("kdsctl", flag.ContinueOnError)
	e.register(fs)
	if _, err := parseFlags(fs, args, false, e.mainUsage, e.stdout); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError("missing command")
	}
	name, rest := fs.Arg(0), fs.Args()[1:]
	if name == "help" {
		return e.help(ctx, rest)
	}
	for _, c := range commands() {
		if c.name == name {
			return c.run(ctx, e, rest)
		}
	}
	return usageError("unknown command %q", name)
}

func (e *env) help(ctx context.Context, args []string) error {
	if len(args) == 0 {
		e.mainUsage(e.stdout)
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, e, []string{"--help"})
		}
	}
	return usageError("unknown command %q", args[0])
}

func (e *env) checkOutput() error {
	if e.output != "table" && e.output != "json" {
		return usageError("-o %q: want table or json", e.output)
	}
	return nil
}

func (e *env) json() bool { return e.output == "json" }

// progress is where commands report what they are waiting for: stdout for people, stderr
// with -o json so that stdout holds nothing but the JSON document.
func (e *env) progress() io.Writer {
	if e.json() {
		return e.stderr
	}
	return e.stdout
}

// flags returns a flag set for command c with the global flags registered too.
func (e *env) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	e.register(fs)
	return fs
}

// parse parses a command's flags, allowing positional arguments between them (as in
// `scale-shards 300 --stream s`), and returns the positional arguments. --help prints the
// command's usage on stdout and returns errHelp.
func (e *env) parse(fs *flag.FlagSet, args []string) ([]string, error) {
	usage := func(w io.Writer) {
		for _, c := range commands() {
			if c.name == fs.Name() {
				fmt.Fprintf(w, "usage: %s\n\n%s\n", strings.TrimSpace("kdsctl "+c.name+" "+c.args), c.summary)
			}
		}
		own := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
		fs.VisitAll(func(f *flag.Flag) {
			if !isGlobalFlag(f.Name) {
				own.Var(f.Value, f.Name, f.Usage)
			}
		})
		own.SetOutput(w)
		if hasFlags(own) {
			fmt.Fprint(w, "\nflags:\n")
			own.PrintDefaults()
		}
		fmt.Fprint(w, "\nglobal flags --endpoint, --region, --app, --stream, -o are accepted too: see 'kdsctl help'\n")
	}
	pos, err := parseFlags(fs, args, true, usage, e.stdout)
	if err != nil {
		return nil, err
	}
	return pos, e.checkOutput()
}

// parseNone is parse for a command that takes no positional arguments.
func (e *env) parseNone(fs *flag.FlagSet, args []string) error {
	pos, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	return wantArgs(fs.Name(), pos, 0, 0)
}

// isGlobalFlag reports whether register adds the flag.
func isGlobalFlag(name string) bool {
	switch name {
	case "endpoint", "region", "app", "lease-table", "stream", "o":
		return true
	}
	return false
}

// flagsSet returns the names of the flags given on the command line.
func flagsSet(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// errHelp ends a command successfully after its usage was printed.
var errHelp = errors.New("help printed")

// parseFlags parses args into fs. With interspersed, positional arguments may appear
// between flags and are returned; otherwise parsing stops at the first one.
func parseFlags(fs *flag.FlagSet, args []string, interspersed bool, usage func(io.Writer), stdout io.Writer) ([]string, error) {
	// The flag package would print errors and usage itself; kdsctl reports them once.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				usage(stdout)
				return nil, errHelp
			}
			return nil, fmt.Errorf("%w: %s: %v", errUsage, fs.Name(), err)
		}
		if !interspersed || fs.NArg() == 0 {
			return pos, nil
		}
		args = fs.Args()
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}

// wantArgs checks the number of positional arguments.
func wantArgs(cmd string, pos []string, lo, hi int) error {
	if len(pos) < lo || len(pos) > hi {
		if len(pos) > hi {
			return usageError("%s: unexpected arguments: %s", cmd, strings.Join(pos[hi:], " "))
		}
		return usageError("%s: missing arguments", cmd)
	}
	return nil
}

func (e *env) awsConfig(ctx context.Context) (aws.Config, error) {
	return awsenv.Load(ctx, e.loadConfig, e.region)
}

func (e *env) kinesis(ctx context.Context) (*kinesis.Client, error) {
	cfg, err := e.awsConfig(ctx)
	if err != nil {
		return nil, err
	}
	return kinesis.NewFromConfig(cfg, func(o *kinesis.Options) {
		if e.endpoint != "" {
			o.BaseEndpoint = aws.String(e.endpoint)
		}
	}), nil
}

func (e *env) dynamo(ctx context.Context) (*dynamodb.Client, error) {
	cfg, err := e.awsConfig(ctx)
	if err != nil {
		return nil, err
	}
	return dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		if e.endpoint != "" {
			o.BaseEndpoint = aws.String(e.endpoint)
		}
	}), nil
}

func (e *env) store(ctx context.Context) (*dynamostore.Store, error) {
	client, err := e.dynamo(ctx)
	if err != nil {
		return nil, err
	}
	var opts []dynamostore.Option
	if e.leaseTable != "" {
		opts = append(opts, dynamostore.WithLeaseTable(e.leaseTable))
	}
	return dynamostore.New(client, e.app, opts...)
}
