from caxton_models.ops.cli import main

raise SystemExit(main())
