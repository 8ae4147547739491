package charttest

import (
	"bufio"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// There is no container runtime here to build the image; these are static checks of the
// Dockerfile and .dockerignore.

type instruction struct {
	cmd  string // upper case: FROM, RUN, COPY, ...
	args string
}

type stage struct {
	from, name string
	ins        []instruction
}

// parseDockerfile splits a Dockerfile into stages (joining continuation lines, dropping
// comments) and returns the global ARG defaults too.
func parseDockerfile(t *testing.T, file string) (stages []*stage, globalArgs map[string]string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	globalArgs = map[string]string{}
	var logical []string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if rest, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(rest + " ")
			continue
		}
		cur.WriteString(line)
		logical = append(logical, strings.Join(strings.Fields(cur.String()), " "))
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur.Len() > 0 {
		t.Fatalf("Dockerfile ends in a continuation line")
	}
	for _, l := range logical {
		cmd, args, _ := strings.Cut(l, " ")
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			f := strings.Fields(args)
			s := &stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			} else if len(f) != 1 {
				t.Fatalf("cannot read FROM %s", args)
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			if cmd != "ARG" {
				t.Fatalf("%s before the first FROM", cmd)
			}
			k, v, _ := strings.Cut(args, "=")
			globalArgs[k] = v
			continue
		}
		s := stages[len(stages)-1]
		s.ins = append(s.ins, instruction{cmd, args})
	}
	return stages, globalArgs
}

func (s *stage) all(cmd string) []string {
	var out []string
	for _, in := range s.ins {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	stages, args := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a builder and a final stage", len(stages))
	}

	// The builder: golang at the go.mod version, cached modules, static trimmed build of both commands.
	build := stages[0]
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVer := regexp.MustCompile(`(?m)^go ([0-9]+\.[0-9]+)`).FindSubmatch(gomod)
	if goVer == nil {
		t.Fatal("no go directive in go.mod")
	}
	from := strings.ReplaceAll(build.from, "${GO_VERSION}", args["GO_VERSION"])
	if !strings.HasPrefix(from, "golang:"+string(goVer[1])) {
		t.Errorf("builder FROM %s (GO_VERSION=%s), want golang:%s", build.from, args["GO_VERSION"], goVer[1])
	}
	if build.name == "" {
		t.Errorf("the builder stage has no name to COPY --from")
	}
	runs := strings.Join(build.all("RUN"), "\n")
	envs := strings.Join(build.all("ENV"), " ")
	for _, want := range []string{"--mount=type=cache,target=/go/pkg/mod", "--mount=type=cache,target=/root/.cache/go-build",
		"go build", "-trimpath", `-ldflags "-s -w `, "internal/buildinfo.stampedVersion=${VERSION}",
		"internal/buildinfo.stampedRevision=${REVISION}", "./cmd/kds-consumer", "./cmd/kdsctl"} {
		if !strings.Contains(runs, want) {
			t.Errorf("builder RUN lacks %q:\n%s", want, runs)
		}
	}
	if !strings.Contains(envs+" "+runs, "CGO_ENABLED=0") {
		t.Errorf("builder does not set CGO_ENABLED=0")
	}
	for _, cmd := range []string{"kds-consumer", "kdsctl"} {
		src, err := os.ReadFile(filepath.Join(root, "cmd", cmd, "main.go"))
		if err != nil || !strings.Contains(string(src), "package main") {
			t.Errorf("cmd/%s is not a main package: %v", cmd, err)
		}
	}

	// The final stage: distroless/static nonroot (or scratch), no shell commands, a numeric
	// non-root user (runAsNonRoot can only verify a numeric one), both binaries on PATH.
	final := stages[len(stages)-1]
	if !strings.HasPrefix(final.from, "gcr.io/distroless/static") && final.from != "scratch" {
		t.Errorf("final FROM %s, want distroless/static or scratch", final.from)
	}
	if strings.HasPrefix(final.from, "gcr.io/distroless/") && !strings.HasSuffix(final.from, ":nonroot") {
		t.Errorf("final FROM %s, want the :nonroot variant", final.from)
	}
	if r := final.all("RUN"); len(r) > 0 {
		t.Errorf("final stage RUN %v: distroless has no shell", r)
	}
	users := final.all("USER")
	if len(users) == 0 {
		t.Fatalf("final stage has no USER")
	}
	if u, _, _ := strings.Cut(users[len(users)-1], ":"); u != "65532" {
		t.Errorf("final USER %s, want 65532 (the chart's runAsUser)", users[len(users)-1])
	}
	if e := final.all("EXPOSE"); !slices.Contains(e, "8080") {
		t.Errorf("EXPOSE %v, want 8080", e)
	}
	copied := map[string]string{} // binary -> destination
	for _, c := range final.all("COPY") {
		f := strings.Fields(c)
		if len(f) != 3 || f[0] != "--from="+build.name {
			continue
		}
		copied[path.Base(f[1])] = f[2]
	}
	onPath := []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}
	for _, bin := range []string{"kds-consumer", "kdsctl"} {
		dst, ok := copied[bin]
		if !ok {
			t.Errorf("final stage does not COPY --from=%s %s", build.name, bin)
			continue
		}
		// The init job runs `kdsctl` by name.
		dir := path.Dir(dst)
		if strings.HasSuffix(dst, "/") {
			dir = path.Clean(dst)
		}
		if !slices.Contains(onPath, dir) {
			t.Errorf("%s copied to %s: not on the image's PATH", bin, dst)
		}
	}
	entry := final.all("ENTRYPOINT")
	if len(entry) != 1 || !regexp.MustCompile(`^\["[^"]*kds-consumer"\]$`).MatchString(entry[0]) {
		t.Errorf("ENTRYPOINT %v, want the exec form running kds-consumer", entry)
	}
}

func TestDockerignore(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, strings.TrimSuffix(strings.TrimPrefix(l, "/"), "/"))
		}
	}
	for _, want := range []string{"bin", ".run", ".git"} {
		if !slices.Contains(patterns, want) {
			t.Errorf(".dockerignore does not exclude %s/ (patterns %v)", want, patterns)
		}
	}
	// Nothing the build needs is excluded: go.mod, go.sum and every package directory of
	// the two commands' dependencies inside this module.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(goBin, "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", "./cmd/kds-consumer", "./cmd/kdsctl")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	needed := []string{"go.mod", "go.sum"}
	for _, dir := range strings.Fields(string(out)) {
		if rel, err := filepath.Rel(root, dir); err == nil && !strings.HasPrefix(rel, "..") {
			needed = append(needed, filepath.ToSlash(rel))
		}
	}
	if len(needed) < 4 {
		t.Fatalf("go list found only %v", needed)
	}
	for _, p := range patterns {
		if strings.HasPrefix(p, "!") {
			continue
		}
		for _, n := range needed {
			// A pattern excludes n if it matches n or one of its parent directories.
			for d := n; d != "." && d != "/"; d = path.Dir(d) {
				if ok, _ := path.Match(p, d); ok {
					t.Errorf(".dockerignore pattern %q excludes %s, which the build needs", p, n)
				}
			}
		}
	}
}
