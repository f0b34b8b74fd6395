from featkit.cli import main

raise SystemExit(main())
