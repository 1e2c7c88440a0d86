from msev15.cli import main

raise SystemExit(main())
