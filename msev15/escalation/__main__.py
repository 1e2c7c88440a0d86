from msev15.escalation.cli import main

raise SystemExit(main())
