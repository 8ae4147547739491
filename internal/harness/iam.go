package harness

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/kds-lease-manager/kds-lease-manager/internal/localengines"
)

// Policy is an IAM policy document reduced to what the check needs.
type Policy struct {
	Statements []Statement
}

// Statement is one policy statement.
type Statement struct {
	Sid       string
	Allow     bool
	Actions   []string
	Resources []string
}

// stringOrList is IAM's "a string or a list of strings".
type stringOrList []string

func (s *stringOrList) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*s = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("want a string or a list of strings: %w", err)
	}
	*s = many
	return nil
}

// LoadPolicy reads a policy file. vars replaces placeholders and names in the text
// before parsing, e.g. "${AWS_REGION}" -> "us-east-1" or "kds-consumer-app" -> a test's
// application name.
func LoadPolicy(path string, vars map[string]string) (*Policy, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return ParsePolicy(raw, vars)
}

// ParsePolicy parses a policy document; see LoadPolicy.
func ParsePolicy(raw []byte, vars map[string]string) (*Policy, error) {
	text := string(raw)
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	// Longer names first, so that a name that contains another is replaced whole.
	sort.Slice(keys, func(i, j int) bool { return len(keys[i]) > len(keys[j]) })
	for _, k := range keys {
		text = strings.ReplaceAll(text, k, vars[k])
	}
	var doc struct {
		Statement json.RawMessage
	}
	if err := json.Unmarshal([]byte(text), &doc); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	type stmt struct {
		Sid      string
		Effect   string
		Action   stringOrList
		Resource stringOrList
	}
	var list []stmt
	if err := json.Unmarshal(doc.Statement, &list); err != nil {
		var one stmt
		if err := json.Unmarshal(doc.Statement, &one); err != nil {
			return nil, fmt.Errorf("policy: Statement: %w", err)
		}
		list = []stmt{one}
	}
	p := &Policy{}
	for _, s := range list {
		if s.Effect != "Allow" && s.Effect != "Deny" {
			return nil, fmt.Errorf("policy: statement %q: Effect %q", s.Sid, s.Effect)
		}
		p.Statements = append(p.Statements, Statement{Sid: s.Sid, Allow: s.Effect == "Allow", Actions: s.Action, Resources: s.Resource})
	}
	return p, nil
}

// Allows reports whether action on resource (an ARN; empty when the request does not
// name one) is allowed: some Allow statement matches and no Deny does. With an empty
// resource only the action is matched.
func (p *Policy) Allows(action, resource string) bool {
	allowed := false
	for _, s := range p.Statements {
		if !matchAny(s.Actions, action, true) {
			continue
		}
		if resource != "" && !matchAny(s.Resources, resource, false) {
			continue
		}
		if !s.Allow {
			return false
		}
		allowed = true
	}
	return allowed
}

func matchAny(patterns []string, s string, fold bool) bool {
	for _, p := range patterns {
		if fold {
			p, s = strings.ToLower(p), strings.ToLower(s)
		}
		if globMatch(p, s) {
			return true
		}
	}
	return false
}

// globMatch matches IAM wildcards: * any run of characters (slashes included), ? one.
func globMatch(p, s string) bool {
	for len(p) > 0 {
		switch p[0] {
		case '*':
			for i := len(s); i >= 0; i-- {
				if globMatch(p[1:], s[i:]) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
		default:
			if s == "" || s[0] != p[0] {
				return false
			}
		}
		p, s = p[1:], s[1:]
	}
	return s == ""
}

// ARN returns the resource's ARN as IAM sees it, or "" when the access names none.
func (a Access) ARN(region, account string) string {
	if a.Resource == "" {
		return ""
	}
	switch a.Service {
	case localengines.Kinesis:
		return fmt.Sprintf("arn:aws:kinesis:%s:%s:stream/%s", region, account, a.Resource)
	case localengines.DynamoDB:
		return fmt.Sprintf("arn:aws:dynamodb:%s:%s:table/%s", region, account, a.Resource)
	}
	return ""
}

// CheckIAM fails for every action the workers called that the policy does not allow on
// the resource they called it on.
func CheckIAM(p *Policy, perWorker map[string]map[Access]int64, region, account string) Result {
	r := Result{Name: "every AWS action within docs/iam-policy.json"}
	seen := map[Access]int64{}
	for _, acc := range perWorker {
		for a, n := range acc {
			seen[a] += n
		}
	}
	list := make([]Access, 0, len(seen))
	for a := range seen {
		list = append(list, a)
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].Action != list[j].Action {
			return list[i].Action < list[j].Action
		}
		return list[i].Resource < list[j].Resource
	})
	var desc []string
	for _, a := range list {
		arn := a.ARN(region, account)
		if !p.Allows(a.Action, arn) {
			where := arn
			if where == "" {
				where = "(resource not named in the request)"
			}
			r.fail("%s on %s (%d calls) is not allowed", a.Action, where, seen[a])
		}
		name := a.Resource
		if name == "" {
			name = "-"
		}
		desc = append(desc, fmt.Sprintf("%s[%s]x%d", a.Action, name, seen[a]))
	}
	r.Checked = strings.Join(desc, " ")
	return r
}
