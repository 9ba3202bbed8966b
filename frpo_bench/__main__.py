from frpo_bench.cli import main

raise SystemExit(main())
