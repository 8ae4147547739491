package multilang

import (
	"slices"
	"strings"
	"testing"
)

func TestParseProperties(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		want     []Property
		wantErr  string
	}{
		{name: "the KCL sample", in: "# The script that abides by the multi-language protocol.\n" +
			"executableName = node sample_kcl_app.js\n\nstreamName = kclnodejssample\n! also a comment\n" +
			"applicationName=kclnodejssample\n  regionName   :  us-east-1\n",
			want: []Property{{"executableName", "node sample_kcl_app.js", 2}, {"streamName", "kclnodejssample", 4},
				{"applicationName", "kclnodejssample", 6}, {"regionName", "us-east-1", 7}}},
		{name: "blank separator and empty value", in: "key value with spaces\nempty=\nbare\n",
			want: []Property{{"key", "value with spaces", 1}, {"empty", "", 2}, {"bare", "", 3}}},
		{name: "continuation lines", in: "executableName = python3 \\\n    app.py \\\n    --verbose\nnext = 1\n",
			want: []Property{{"executableName", "python3 app.py --verbose", 1}, {"next", "1", 4}}},
		{name: "an even number of backslashes ends the line", in: "path = C:\\\\\nnext = 2\n",
			want: []Property{{"path", `C:\`, 1}, {"next", "2", 2}}},
		{name: "escapes", in: "a\\=b = x\\ty\\u0041\\:\n",
			want: []Property{{"a=b", "x\tyA:", 1}}},
		{name: "bad unicode escape", in: "k = \\u12\n", wantErr: "line 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseProperties(strings.NewReader(tt.in))
			if failed := err != nil; failed != (tt.wantErr != "") || failed && !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
