package multilang

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Property is one key and value of a .properties file, with the line it starts on.
type Property struct {
	Key, Value string
	Line       int
}

// ParseProperties reads a Java .properties file (the KCL MultiLangDaemon's
// configuration): "key = value", "key: value" or "key value" lines; lines starting with
// '#' or '!' are comments; a line ending in an odd number of backslashes continues on the
// next one (whose leading blanks are dropped); the escapes \t \n \r \f \uXXXX and \<char>
// are decoded. Properties are returned in file order; a key given twice appears twice
// (the last one wins, as in Java).
func ParseProperties(r io.Reader) ([]Property, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var out []Property
	var logical strings.Builder
	start, n := 0, 0
	continuing := false
	// emit ends the logical line that started on line start.
	emit := func() error {
		p, err := splitProperty(logical.String())
		if err != nil {
			return fmt.Errorf("properties line %d: %w", start, err)
		}
		p.Line = start
		out = append(out, p)
		return nil
	}
	for sc.Scan() {
		n++
		line := strings.TrimLeft(sc.Text(), " \t\f")
		if !continuing {
			if line == "" || line[0] == '#' || line[0] == '!' {
				continue
			}
			start = n
			logical.Reset()
		}
		trailing := len(line) - len(strings.TrimRight(line, `\`))
		continuing = trailing%2 == 1
		if continuing {
			line = line[:len(line)-1]
		}
		logical.WriteString(line)
		if continuing {
			continue
		}
		if err := emit(); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("properties: %w", err)
	}
	if continuing {
		if err := emit(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// splitProperty splits a logical line at the first unescaped '=', ':' or blank.
func splitProperty(s string) (Property, error) {
	end := len(s)
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			continue
		}
		if s[i] == '=' || s[i] == ':' || s[i] == ' ' || s[i] == '\t' || s[i] == '\f' {
			end = i
			break
		}
	}
	rest := strings.TrimLeft(s[end:], " \t\f")
	if rest != "" && (rest[0] == '=' || rest[0] == ':') {
		rest = strings.TrimLeft(rest[1:], " \t\f")
	}
	key, err := unescape(s[:end])
	if err != nil {
		return Property{}, err
	}
	value, err := unescape(rest)
	if err != nil {
		return Property{}, fmt.Errorf("%s: %w", key, err)
	}
	return Property{Key: key, Value: value}, nil
}

func unescape(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i == len(s)-1 {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 'f':
			b.WriteByte('\f')
		case 'u':
			if len(s)-i-1 < 4 {
				return "", fmt.Errorf("malformed \\u escape in %q", s)
			}
			r, err := strconv.ParseUint(s[i+1:i+5], 16, 16)
			if err != nil {
				return "", fmt.Errorf("malformed \\u escape in %q", s)
			}
			b.WriteRune(rune(r))
			i += 4
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String(), nil
}
