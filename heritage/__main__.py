from heritage.cli import main

raise SystemExit(main())
