#!/usr/bin/env bash
# Fails when a file of a target (Sources/<Target>, Tests/<Target>) imports a Depot* or C* module
# that Package.swift does not list among that target's dependencies. SwiftPM lets a module
# import what a dependency brings in transitively; declaring every import keeps the layering in
# docs/ARCHITECTURE.md visible in Package.swift.
set -euo pipefail
cd "$(dirname "$0")/.."
perl -e '
    local $/; open my $f, "<", "Package.swift" or die; my $pkg = <$f>;
    $pkg =~ s{^\s*//[^\n]*}{}mg; # comment lines
    my %deps;
    # .target(name: "X", dependencies: [ ... ]) and friends; nested brackets do not occur in the lists.
    while ($pkg =~ /\.(?:target|executableTarget|testTarget)\(\s*name:\s*"([^"]+)"(.*?)\)\s*,?\s*(?=\.(?:target|executableTarget|testTarget|systemLibrary)\(|\]\s*,\s*swiftLanguageModes|\z)/sg) {
        my ($name, $rest) = ($1, $2);
        my %d; $d{$1} = 1 while $rest =~ /"([A-Za-z0-9_]+)"/g;
        $deps{$name} = \%d;
    }
    my $bad = 0;
    for my $dir (glob("Sources/* Tests/*")) {
        next unless -d $dir;
        my ($target) = $dir =~ m{/([^/]+)$};
        next unless exists $deps{$target};
        for my $file (split /\n/, `find "$dir" -name "*.swift"`) {
            open my $s, "<", $file or die; my $text = <$s>;
            while ($text =~ /^\s*(?:\@testable\s+|\@_exported\s+)?import\s+(?:struct\s+|class\s+|enum\s+|func\s+)?([A-Za-z0-9_]+)/mg) {
                my $m = $1;
                next unless $m =~ /^(Depot|C[A-Z])/;
                next if $m eq $target || $deps{$target}{$m};
                print "$file imports $m, which Package.swift does not list for $target\n";
                $bad = 1;
            }
        }
    }
    exit $bad;
'
